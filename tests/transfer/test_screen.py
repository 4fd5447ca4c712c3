"""transfer.screen: stage II trains only the transfers an estimator ranks best, records the rest as screened out,
AHP and the BIP treat them as not tried, and an unscreened run afterwards trains exactly what was left out
(the store then equals an unscreened run's, byte for byte in its losses, stamps and attributes)."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import zarr

from _faults import cli, copy_run, one_line
from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import SCREEN_ESTIMATORS, load_config
from taskonomy.runfolder import RunFolder
from taskonomy.transfer.estimate import ESTIMATORS
from taskonomy.transfer.screen import CONTROLS

SCREEN = "transfer.screen={estimator: logme, keep: 1, beam: 0}"


def test_the_config_names_every_estimator_and_unset_changes_no_stamp():
    from taskonomy.transfer.stage import _readout_config

    assert SCREEN_ESTIMATORS == ESTIMATORS
    plain, screened = load_config(None), load_config(None, settings=[SCREEN])
    assert plain.transfer.screen is None and screened.transfer.screen.keep == 1
    assert _readout_config(plain) == _readout_config(screened)  # the rows' stamps ignore screening
    assert "screen" not in _readout_config(plain)


@pytest.mark.parametrize("setting, expected", [
    ("transfer.screen={estimator: lgome, keep: 4, beam: 1}", "transfer.screen.estimator: Input should be 'logme'"),
    ("transfer.screen={estimator: logme, keep: 0, beam: 1}", "transfer.screen.keep: Input should be greater"),
    ("transfer.screen={estimator: logme, keep: 4, beam: -1}", "transfer.screen.beam: Input should be greater"),
    ("transfer.screen={estimator: logme, keep: 4}", "transfer.screen.beam: Field required"),
    ("transfer.screen={estimator: logme, keep: 4, beam: 1, top: 2}", "unknown key 'transfer.screen.top'"),
])
def test_bad_screen_settings_are_one_line(setting, expected):
    with pytest.raises(TaskonomyError) as info:
        load_config(None, settings=[setting])
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_ridge_needs_a_validation_part():
    with pytest.raises(TaskonomyError, match="screen.estimator ridge scores on the validation part"):
        load_config(None, settings=["transfer.max_order=1", "transfer.validation=0",
                                    "transfer.screen={estimator: ridge, keep: 2, beam: 0}"])


def _rows(run_dir) -> dict[str, list[str]]:
    store = zarr.open_group(str(RunFolder(run_dir).transfers), mode="r")
    return {t: list(store[t].attrs["transfers"]) for t in store.attrs["targets"]}


def _screened(run_dir) -> dict[str, list[str]]:
    store = zarr.open_group(str(RunFolder(run_dir).transfers), mode="r")
    return {t: list(store[t].attrs.get("screened_out", [])) for t in store.attrs["targets"]}


def _solutions(run_dir, config, budgets=(1, 2, 3)):
    from taskonomy.taxonomy.bip import solve
    from taskonomy.taxonomy.stage import make_problem, read_affinity

    affinity = read_affinity(run_dir)
    return {b: solve(make_problem(affinity, config.taxonomy, b, 2)) for b in budgets}


def test_screened_transfers_are_recorded_never_chosen_and_an_unscreened_run_trains_only_them(faults_run, tmp_path):
    from taskonomy.artifacts import read_losses
    from taskonomy.taxonomy.stage import sweep_policies
    from taskonomy.transfer.estimate import compute_estimates

    config_path, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    before, config = _rows(reference), load_config(config_path, settings=[SCREEN])
    assert cli(config_path, run_dir, "--set", SCREEN, "transfer") == 0
    rows, screened = _rows(run_dir), _screened(run_dir)
    scores = compute_estimates(config, run_dir, ["logme"]).table("logme")  # as `taskonomy estimate` scores them
    with RunFolder(run_dir).screen.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    for target, names in rows.items():
        first = [n for n in names if n not in ("full", "scratch") and "+" not in n]
        candidates = {s: v for s, v in scores.row(target).items() if s not in ("full", *CONTROLS)}
        assert first == [s for s in before[target] if s in (max(candidates, key=candidates.get), *CONTROLS)]
        assert not any("+" in n for n in names)  # beam 0: no higher order trained
        # every first-order row of the unscreened run is here or recorded as screened out, never silently missing
        # (its beam sets may differ: the beam ranks the trained first-order readouts)
        assert {n for n in before[target] if "+" not in n} - set(names) <= set(screened[target]) != set()
        mine = {r["transfer"]: r for r in table if r["target"] == target}
        assert {n for n, r in mine.items() if r["decision"] == "screened out"} == set(screened[target])
        for source, value in candidates.items():
            assert float(mine[source]["score"]) == pytest.approx(value, rel=1e-6)
    assert zarr.open_group(str(RunFolder(run_dir).transfers), mode="r").attrs["screen"]["keep"] == 1

    # AHP: a screened-out transfer is not tried (an empty cell); the BIP never chooses one, at any budget
    assert cli(config_path, run_dir, "--set", SCREEN, "ahp") == 0
    from taskonomy.artifacts import read_affinity

    affinity = read_affinity(run_dir)
    for target in affinity.targets:
        row = affinity.row(target)
        assert not set(row) & set(screened[target]) and math.isclose(sum(row.values()), 1, abs_tol=1e-3)
    unscreened, now = _solutions(reference, config), _solutions(run_dir, config)
    assert any(tr.name in screened[t] for s in unscreened.values() for t, tr in s.policy.items())  # not vacuous
    for solution in now.values():
        assert solution.status in ("optimal", "infeasible")
        assert not any(tr.name in screened[t] for t, tr in solution.policy.items())
    assert now[1].supervised != unscreened[1].supervised
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        points, _, _ = sweep_policies(config, run_dir)  # gain and quality on the rows there are
    assert any(p.policy for p in points)

    # unscreened again: exactly the rows left out are trained, and the store is the unscreened run's
    assert cli(config_path, run_dir, "--set", "transfer.screen=null", "transfer") == 0
    assert _rows(run_dir) == before and not any(_screened(run_dir).values())
    assert not RunFolder(run_dir).screen.exists()
    mine, theirs = read_losses(run_dir).targets, read_losses(reference).targets
    ours = zarr.open_group(str(RunFolder(run_dir).transfers), mode="r")
    assert "screen" not in ours.attrs
    for target, losses in theirs.items():
        assert mine[target].stamps == losses.stamps
        assert np.array_equal(mine[target].losses, losses.losses)
        assert np.array_equal(mine[target].validation, losses.validation, equal_nan=True)


def test_rsa_screening_refuses_a_target_without_its_own_features(faults_run):
    from taskonomy.extract.features import open_features
    from taskonomy.scenes.dataset import data_hash, open_data
    from taskonomy.transfer.screen import open_screen
    from taskonomy.transfer.stage import validation_part

    config_path, reference = faults_run
    config = load_config(config_path, settings=["transfer.screen={estimator: rsa, keep: 1, beam: 1}"])
    run = RunFolder(reference)
    data = open_data(run.data, config)
    sources = ["normal", "class_scene", "random", "pixels"]  # depth_zbuffer as if added from the cache
    root = open_features(run.features, sources, data_hash(data))
    with pytest.raises(TaskonomyError, match="rsa compares with a target's own stage I features and "
                                             "depth_zbuffer has none"):
        open_screen(config, data, root, sources, {"depth_zbuffer": registry.get("depth_zbuffer")}, {},
                    validation_part(data, config))


def test_a_screen_the_folder_does_not_have_is_refused_by_other_stages(faults_run, tmp_path, capsys):
    config_path, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    assert cli(config_path, run_dir, "--set", SCREEN, "ahp") == 2
    assert "transfer.screen" in one_line(capsys) and RunFolder(run_dir).affinity.is_file()


def test_the_beam_keeps_the_sets_the_estimator_ranks_best_on_their_concatenated_features(faults_run, tmp_path):
    from taskonomy.scenes.dataset import open_data
    from taskonomy.transfer.estimate import compute_estimates, logme, read_target

    config_path, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    settings = ["transfer.beam=3", "transfer.screen={estimator: logme, keep: 2, beam: 1}"]
    assert cli(config_path, run_dir, *[a for s in settings for a in ("--set", s)], "transfer") == 0
    config = load_config(config_path, settings=settings)
    x = compute_estimates(config, run_dir, ["logme"]).features.x  # pooled, standardised, as the estimators read
    data = open_data(RunFolder(run_dir).data, config)
    index = np.asarray(data["splits/transfer"][:])
    with RunFolder(run_dir).screen.open(newline="") as handle:
        table = [r for r in csv.DictReader(handle) if r["order"] == "2"]
    rows = _rows(run_dir)
    for target in rows:
        sets = {r["transfer"]: r for r in table if r["target"] == target}
        assert len(sets) == 3  # C(3, 2) of the beam's three best trained first-order readouts
        y, _ = read_target(registry.get(target), data[f"labels/{target}"].get_orthogonal_selection((index,)),
                            config.seed)
        expected = {name: logme(np.concatenate([x[(s, None)] for s in name.split("+")], 1), y) for name in sets}
        for name, row in sets.items():
            assert float(row["score"]) == pytest.approx(expected[name], rel=1e-6)
        best = max(expected, key=expected.get)
        assert [n for n in rows[target] if "+" in n] == [best]
        assert {n for n, r in sets.items() if r["decision"] == "screened out"} == set(sets) - {best}


@pytest.mark.slow  # 17 s: a whole screened stage II (scratch networks too), a killed child process and its resume
def test_a_killed_screened_run_resumes_to_the_uninterrupted_one(faults_run, tmp_path):
    from _faults import killed
    from taskonomy.artifacts import read_losses

    config_path, reference = faults_run
    settings = [a for s in ("transfer.beam=3", "transfer.screen={estimator: logme, keep: 1, beam: 1}")
                for a in ("--set", s)]
    whole, cut = (copy_run(reference, tmp_path / name, "transfers.zarr") for name in ("whole", "cut"))
    assert cli(config_path, whole, *settings, "transfer") == 0
    # killed once every target's first order is written (3 targets), before the beam's sets are scored and trained
    killed(config_path, cut, [*settings, "transfer"], "taskonomy.transfer.stage:_write_target", 3, "after")
    assert not RunFolder(cut).screen.exists()
    assert cli(config_path, cut, *settings, "transfer") == 0
    a, b = read_losses(whole).targets, read_losses(cut).targets
    for target in a:
        assert (a[target].transfers, a[target].stamps, a[target].screened_out) == \
            (b[target].transfers, b[target].stamps, b[target].screened_out)
        assert np.array_equal(a[target].losses, b[target].losses) and any("+" in n for n in a[target].transfers)
    assert RunFolder(whole).screen.read_text() == RunFolder(cut).screen.read_text()
