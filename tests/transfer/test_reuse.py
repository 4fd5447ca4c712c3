"""Cached features reused end to end: add a target and a source to a finished run, then every later stage.

On the complete run of the fault suite's small config (tests/_faults.py), as a user types the commands:
no --config (the run folder knows its own), counts of what each step trained read from its output.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import zarr

from _faults import copy_run, snapshot
from taskonomy.cli import main

TARGET, SOURCE = "far_room", "vp_normal"


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    """A visualpriors-format encoder checkpoint (random weights: what matters here is the plumbing)."""
    import torch

    from taskonomy.extract.visualpriors import TaskonomyEncoder, save_taskonomy_checkpoint

    torch.manual_seed(0)
    return save_taskonomy_checkpoint(TaskonomyEncoder(), tmp_path_factory.mktemp("encoder"), "normal")


def taskonomy(run, *args: str) -> int:
    return main(["--run-dir", str(run), *args])


def far_labels(run, folder):
    """Is the room far (mean depth above the median)? One label per data.zarr image."""
    depth = zarr.open_group(str(run / "data.zarr"), mode="r")["labels/depth_zbuffer"][:].astype(np.float32)
    mean = depth.reshape(len(depth), -1).mean(axis=1)
    path = folder / "far.npy"
    np.save(path, (mean > np.median(mean)).astype(np.float32)[:, None])
    return path


def rows(run) -> dict[str, dict[str, np.ndarray]]:
    """transfers.zarr: target -> transfer -> per-image test losses."""
    store = zarr.open_group(str(run / "transfers.zarr"), mode="r")
    return {t: dict(zip(store[t].attrs["transfers"], store[t]["losses"][:])) for t in store.attrs["targets"]}


def trained(err: str, stage: str) -> dict[str, int]:
    """Rows trained per target, from a command's status lines ('<stage>: <target> N transfers trained')."""
    out = {}
    for target, state in re.findall(rf"^{stage}: (\w+) +(.*)$", err, flags=re.M):
        if state == "up to date" or "trained" in state:
            out[target] = int(state.split()[0]) if "trained" in state else 0
    return out


def same_rows(before, after, targets) -> None:
    for target in targets:
        assert list(before[target]) == list(after[target])
        for name, losses in before[target].items():
            np.testing.assert_array_equal(after[target][name], losses)


def test_add_target_and_source_reach_every_later_stage(faults_run, encoder_file, tmp_path, capsys):
    _, reference = faults_run
    run = copy_run(reference, tmp_path)
    before = rows(run)
    capsys.readouterr()

    # a target from the cache: its own network (full), scratch and every readout; the others untouched
    assert taskonomy(run, "add-target", TARGET, "--labels", str(far_labels(run, tmp_path)), "--loss", "bce") == 0
    err = capsys.readouterr().err
    after = rows(run)
    assert list(after) == [*before, TARGET]
    n_sources = len(zarr.open_group(str(run / "transfers.zarr"), mode="r").attrs["sources"])
    # full + scratch + every first-order source + the beam's pairs (beam 2, max order 2: one pair)
    assert trained(err, "add-target") == {TARGET: 2 + n_sources + 1}
    assert list(after[TARGET])[0] == "full" and list(after[TARGET])[-1] == "scratch"
    same_rows(before, after, before)

    # a source: only its features are extracted and only its rows trained
    assert taskonomy(run, "--set", "extract.taskonomy_size=32", "add-source", SOURCE,
                     "--encoder", str(encoder_file)) == 0
    err = capsys.readouterr().err
    assert re.search(rf"add-source: {SOURCE} +features extracted", err)
    assert len(re.findall(r"features up to date", err)) == n_sources
    with_source = rows(run)
    for target, table in with_source.items():
        new = [n for n in table if n not in after[target]]
        assert SOURCE in new and all(SOURCE in n.split("+") for n in new)
        assert trained(err, "add-source")[target] == len(new)
        for name in table.keys() - set(new):  # kept rows are the same bits
            np.testing.assert_array_equal(table[name], after[target][name])
    assert SOURCE in (run / "config.yaml").read_text()

    # ... equal, row for row and bit for bit, to a fresh transfer with the source in the config
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh)
    assert taskonomy(fresh, "-q", "transfer", "--force") == 0
    same_rows(rows(fresh), with_source, with_source)

    # every later stage includes both
    for command in (["ahp"], ["solve"], ["evaluate"], ["all-for-one", TARGET], ["report"]):
        assert taskonomy(run, "-q", *command) == 0, command
    with (run / "affinity.csv").open() as handle:
        affinity = list(csv.DictReader(handle))
    assert TARGET in [r["target"] for r in affinity] and SOURCE in affinity[0]
    with (run / "evaluation.csv").open() as handle:
        evaluated = list(csv.DictReader(handle))
    assert any(r["target"] == TARGET and r["gain"] for r in evaluated)
    assert json.loads((run / f"all_for_one_{TARGET}.json").read_text())["best"]["transfer"]
    page = (run / "report" / "index.html").read_text()
    assert TARGET in page and SOURCE in page

    # a rerun of the whole pipeline trains nothing
    capsys.readouterr()
    assert taskonomy(run, "run") == 0
    err = capsys.readouterr().err
    assert set(trained(err, "transfer").values()) == {0} and len(trained(err, "transfer")) == len(with_source)
    same_rows(with_source, rows(run), with_source)


@pytest.mark.slow  # 12 s: a LocalCluster; test_transfer.py::test_a_dask_cluster_gives_the_same_losses stays default
def test_add_target_on_a_cluster_equals_in_process(faults_run, tmp_path):
    from distributed import LocalCluster

    _, reference = faults_run
    local, remote = copy_run(reference, tmp_path / "a"), copy_run(reference, tmp_path / "b")
    labels = far_labels(local, tmp_path)
    assert taskonomy(local, "-q", "add-target", TARGET, "--labels", str(labels), "--loss", "bce") == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert taskonomy(remote, "-q", "add-target", TARGET, "--labels", str(labels), "--loss", "bce",
                         "--scheduler", cluster.scheduler_address) == 0
    same_rows(rows(local), rows(remote), [TARGET])


def test_hostile_add_source_and_add_target_change_nothing(faults_run, encoder_file, tmp_path, capsys):
    _, reference = faults_run
    run = copy_run(reference, tmp_path)
    not_an_encoder = tmp_path / "notes_encoder-00000000.pth"
    not_an_encoder.write_text("not a checkpoint")
    before = snapshot(run)
    capsys.readouterr()
    cases = [
        (["add-source", "normal", "--encoder", str(encoder_file)], "is taken by a task"),
        (["add-source", "random", "--encoder", str(encoder_file)], "is taken by a task"),
        (["add-source", "Bad/Name", "--encoder", str(encoder_file)], "invalid task name"),
        (["add-source", SOURCE, "--encoder", str(not_an_encoder)], str(not_an_encoder.name)),
        (["add-source", SOURCE, "--encoder", str(run / "models" / "normal.pt")], "normal.pt"),
        (["add-source", SOURCE, "--encoder", str(tmp_path / "missing.pth")], "does not exist"),
        (["add-target", "normal", "--labels", str(far_labels(reference, tmp_path)), "--loss", "bce"], "is taken"),
    ]
    for args, message in cases:
        assert taskonomy(run, *args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (args, err)
    assert snapshot(run) == before
    missing = tmp_path / "nowhere"
    for args, _ in cases[:1] + cases[-1:]:
        assert taskonomy(missing, *args) == 2
        assert "does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_an_added_target_of_other_data_is_refused_by_name(faults_run, tmp_path, capsys):
    """data.zarr rebuilt after add-target (simulated by the recorded data hash): transfer names the target."""
    _, reference = faults_run
    run = copy_run(reference, tmp_path)
    assert taskonomy(run, "-q", "add-target", TARGET, "--labels", str(far_labels(run, tmp_path)), "--loss", "bce") == 0
    entries = json.loads((run / "added_targets.json").read_text())
    entries[0]["data_hash"] = "0123456789abcdef"
    (run / "added_targets.json").write_text(json.dumps(entries))
    before = snapshot(run)
    capsys.readouterr()
    assert taskonomy(run, "-q", "transfer") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"added target {TARGET} was labelled for another data.zarr" in err
    assert f"taskonomy add-target {TARGET} --labels FILE --loss bce --force" in err
    assert snapshot(run) == before
