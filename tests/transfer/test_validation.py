"""Honest selection (issue 15): readouts train on the transfer split less its validation scenes, and the beam
and the best first-order source are chosen on those scenes, never on the test images AHP and evaluation score.

On the fault suite's small complete run (tests/_faults.py); each test retrains its stage II in about a second.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from _faults import cli, copy_run
from taskonomy import TaskonomyError
from taskonomy.artifacts import read_losses
from taskonomy.cli import main
from taskonomy.config import load_config
from taskonomy.runtime import cap_threads
from taskonomy.taxonomy.evaluate import best_first_order
from taskonomy.transfer import stage
from taskonomy.transfer.stage import beam_transfers, transfer_name, validation_part


@pytest.fixture(autouse=True)
def _two_threads():
    yield
    cap_threads(2)  # the fault config runs on one thread; the rest of the suite expects two


def transfer(config, run, capsys) -> str:
    """`taskonomy transfer` with its status lines (no -q); asserts success, returns its stderr."""
    capsys.readouterr()
    assert main(["--config", str(config), "--run-dir", str(run), "transfer"]) == 0
    return capsys.readouterr().err


def trained(err: str) -> dict[str, int]:
    """Rows trained per target from transfer's status lines ('transfer: <target> N transfers trained, ...')."""
    return {t: int(s.split()[0]) if "trained" in s else 0
            for t, s in re.findall(r"^transfer: (\w+) +(.*)$", err, flags=re.M)}


def noisy(split_wanted: str, held: np.ndarray | None = None):
    """stage._split_labels with the labels of `split_wanted` (only the images of the mask `held`) replaced by
    noise: Gaussian values of the labels' mean and spread, or every class index moved to the next class."""
    real = stage._split_labels

    def labels(data, target, split, own=None):
        out = real(data, target, split, own)
        if split != split_wanted:
            return out
        rows = np.arange(len(out)) if held is None else np.flatnonzero(held)
        out = out.copy()
        if out.dtype.kind == "f":
            noise = np.random.default_rng(7).normal(out.mean(), out.std() + 1e-3, out[rows].shape)
            out[rows] = noise.astype(out.dtype)
        else:
            out[rows] = (out[rows] + 1) % max(2, int(out.max()) + 1)
        return out

    return labels


def test_the_validation_part_is_whole_transfer_scenes_and_the_beam_ranks_on_it(faults_run):
    config, run = faults_run
    data = zarr.open_group(str(run / "data.zarr"), mode="r")
    transfer_split, test, scene = (np.asarray(data[k][:]) for k in ("splits/transfer", "splits/test", "meta/scene"))
    table = read_losses(run)
    val = np.asarray(table.validation_index)
    fit = np.setdiff1d(transfer_split, val)
    assert len(val) and len(fit) and set(val) < set(transfer_split)
    np.testing.assert_array_equal(val, transfer_split[validation_part(data, load_config(config))])
    # whole scenes: every transfer image of a validation scene is held out; fit, validation and test share none
    assert set(transfer_split[np.isin(scene[transfer_split], scene[val])]) == set(val)
    for a, b in ((val, fit), (val, test), (fit, test)):
        assert not set(scene[a]) & set(scene[b])
    for target, losses in table.targets.items():
        assert losses.validation.shape == (len(losses.transfers), len(val))
        for name, row in zip(losses.transfers, losses.validation, strict=True):
            assert np.isnan(row).all() if name in ("full", "scratch") else np.isfinite(row).all(), (target, name)
        first = [n for n, o in zip(losses.transfers, losses.orders, strict=True) if o == 1]
        ranked = sorted(first, key=losses.validation_mean)
        assert [n for n in losses.transfers if "+" in n] == [transfer_name(s) for s in beam_transfers(ranked, 2, 2)]
        assert best_first_order(losses) == ranked[0]
        assert best_first_order(losses, exclude=[ranked[0]]) == ranked[1]
    with pytest.raises(TaskonomyError, match="has no validation losses"):
        losses.validation_mean("scratch")


def test_noise_in_the_test_labels_changes_no_beam_set(faults_run, tmp_path, monkeypatch):
    config, reference = faults_run
    run = copy_run(reference, tmp_path)
    monkeypatch.setattr(stage, "_split_labels", noisy("test"))
    assert cli(config, run, "transfer", "--force") == 0
    before, after = read_losses(reference), read_losses(run)
    for target, was in before.targets.items():
        now = after[target]
        assert now.transfers == was.transfers, target  # every beam set, in the same order
        np.testing.assert_array_equal(now.validation, was.validation)  # the same readouts, bit for bit
        assert best_first_order(now) == best_first_order(was)
        readouts = [i for i, o in enumerate(was.orders) if o >= 1]
        assert not np.array_equal(now.losses[readouts], was.losses[readouts]), target  # the noise reached test


def test_readouts_never_train_on_the_validation_images(faults_run, tmp_path, monkeypatch):
    config, reference = faults_run
    run = copy_run(reference, tmp_path)
    data = zarr.open_group(str(run / "data.zarr"), mode="r")
    monkeypatch.setattr(stage, "_split_labels", noisy("transfer", validation_part(data, load_config(config))))
    assert cli(config, run, "--set", "transfer.max_order=1", "transfer", "--force") == 0
    before, after = read_losses(reference), read_losses(run)
    for target, was in before.targets.items():
        now = after[target]
        for name in (n for n, o in zip(was.transfers, was.orders, strict=True) if o == 1):
            np.testing.assert_array_equal(now.row(name), was.row(name))  # test losses: the same weights
        first = [i for i, o in enumerate(was.orders) if o == 1]
        assert not np.array_equal(now.validation[first], was.validation[first]), target


def test_kept_rows_keep_their_validation_losses_and_rows_without_them_retrain(faults_run, tmp_path, capsys):
    config, reference = faults_run
    run = copy_run(reference, tmp_path)
    assert set(trained(transfer(config, run, capsys)).values()) == {0}
    before = read_losses(reference)
    target = next(iter(before.targets))
    store = zarr.open_group(str(run / "transfers.zarr"), mode="a")
    row = before[target].orders.index(1)
    values = store[target]["validation"][...]
    values[row] = np.nan  # a row stored without its validation losses (same stamp) is not trusted
    store[target]["validation"][...] = values
    counts = trained(transfer(config, run, capsys))
    assert counts == {t: int(t == target) for t in before.targets}
    after = read_losses(run)
    for name, was in before.targets.items():  # retrained to the same bits; the others kept as they were
        np.testing.assert_array_equal(after[name].losses, was.losses)
        np.testing.assert_array_equal(after[name].validation, was.validation)


def test_a_store_of_the_previous_transfer_version_is_retrained(faults_run, tmp_path, monkeypatch, capsys):
    config, reference = faults_run
    run = copy_run(reference, tmp_path)
    monkeypatch.setattr(stage, "TRANSFER_VERSION", "3")  # version 3 ranked on test and stored no validation
    assert cli(config, run, "transfer", "--force") == 0
    store = zarr.open_group(str(run / "transfers.zarr"), mode="a")
    for target in store.attrs["targets"]:
        del store[target]["validation"]
    monkeypatch.undo()
    counts = trained(transfer(config, run, capsys))
    before, after = read_losses(reference), read_losses(run)
    assert counts == {t: len(losses.transfers) - 1 for t, losses in before.targets.items()}  # all but `full`
    for name, was in before.targets.items():
        np.testing.assert_array_equal(after[name].losses, was.losses)
        np.testing.assert_array_equal(after[name].validation, was.validation)


def test_no_validation_part_is_refused_when_there_is_a_beam_to_rank(faults_run):
    config, run = faults_run
    with pytest.raises(TaskonomyError, match="transfer: validation 0 leaves nothing to rank"):
        load_config(settings=["transfer.validation=0"])
    assert load_config(settings=["transfer.max_order=1", "transfer.validation=0"]).transfer.validation == 0
    data = zarr.open_group(str(run / "data.zarr"), mode="r")
    few = load_config(config, settings=["transfer.validation=0.01"])  # 3 transfer scenes: none held out
    with pytest.raises(TaskonomyError, match="holds out none of the transfer split's 3 scenes"):
        validation_part(data, few)
    assert not validation_part(data, load_config(config, settings=["transfer.validation=0.01",
                                                                   "transfer.max_order=1"])).any()
