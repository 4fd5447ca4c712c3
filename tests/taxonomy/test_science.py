"""`taskonomy science`: each goal's check on a constructed case whose answer is known, then the command and the
report section on the shared finished small run (tests/_faults.py)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest

from _faults import cli, copy_run, one_line, snapshot
from taskonomy.artifacts import SummaryRow, TargetLosses
from taskonomy.taxonomy import evaluate
from taskonomy.taxonomy.bip import Transfer
from taskonomy.taxonomy.compare import Agreement
from taskonomy.taxonomy.science import (NO_VALIDATION, agreement_goal, consistency_goal, controls_goals,
                                        degenerate_goal, gain_goal, stability_goal, stage1_goal, taxonomy_goal)

GOALS = ["stage1", "gain", "consistency", "degenerate", "stability", "random", "pixels", "published", "taxonomy_b3",
         "taxonomy_b4", "taxonomy_b5"]


def _table(target: str, means: dict[str, float], n: int = 40, seed: int = 0) -> TargetLosses:
    """A loss table whose rows have the given mean test losses (small per-image noise around them)."""
    rng = np.random.default_rng(seed)
    names = list(means)
    noise = rng.normal(0, 0.01, (len(names), n))
    losses = np.array([means[name] for name in names])[:, None] + noise - noise.mean(axis=1, keepdims=True)
    orders = [0 if name in ("full", "scratch") else name.count("+") + 1 for name in names]
    return TargetLosses(target, names, orders, losses)


def _summary(target: str, ratio: float, stability: float) -> SummaryRow:
    return SummaryRow(target, 10, 40, 10.0, ratio, 12, True, "normal", 0.2, stability)


def test_stage1_misses_name_the_network_that_does_not_beat_its_baseline():
    rows = [{"task": "normal", "ratio": "0.5", "win_rate": "0.9", "beats_baseline": "True"},
            {"task": "vanishing_point", "ratio": "0.95", "win_rate": "0.6", "beats_baseline": "False"}]
    goal = stage1_goal(rows)
    assert not goal.passed and goal.misses == ["vanishing_point"] and goal.value == 0.95
    assert stage1_goal(rows[:1]).passed


def test_gain_is_the_win_rate_of_the_best_first_order_source_against_scratch():
    good = _table("normal", {"full": 0.3, "scratch": 0.6, "depth_zbuffer": 0.4, "random": 0.9})
    bad = _table("curvature", {"full": 0.3, "scratch": 0.4, "depth_zbuffer": 0.6, "random": 0.9})
    goal = gain_goal({"normal": good, "curvature": bad})
    assert not goal.passed and goal.misses == ["curvature"]
    assert goal.checks[0].value == 1.0 and goal.checks[0].note == "from depth_zbuffer"
    assert goal.checks[1].value == 0.0 and NO_VALIDATION in goal.note  # no validation losses: said, not silent


def test_gain_takes_the_source_chosen_on_validation(monkeypatch):
    table = _table("normal", {"full": 0.3, "scratch": 0.6, "depth_zbuffer": 0.4, "reshading": 0.5})
    validation = np.full((4, 10), np.nan)  # full and scratch have none
    validation[2], validation[3] = 0.9, 0.1  # on validation, reshading wins; on test, depth_zbuffer
    chosen = dataclasses.replace(table, validation=validation)
    monkeypatch.setattr(evaluate, "best_first_order", lambda losses: "reshading")
    goal = gain_goal({"normal": chosen})
    assert goal.checks[0].note == "from reshading" and goal.note == "chosen on validation"
    assert goal.checks[0].value == evaluate.win_rate(table.row("reshading"), table.row("scratch")) == 1.0
    monkeypatch.undo()  # taxonomy.evaluate's own best_first_order
    assert gain_goal({"normal": chosen}).checks[0].note == "from reshading"
    validation[3, 0] = np.nan  # a first-order row without validation losses: chosen on test, and said so
    missing = gain_goal({"normal": dataclasses.replace(table, validation=validation)})
    assert missing.checks[0].note == "from depth_zbuffer" and missing.note == NO_VALIDATION


def test_consistency_and_stability_read_the_ahp_summary():
    summary = [_summary("normal", 0.02, 0.95), _summary("curvature", 17.1, 0.4), _summary("depth_zbuffer", 0.3,
                                                                                          math.nan)]
    consistency, stability = consistency_goal(summary), stability_goal(summary)
    assert consistency.misses == ["curvature"] and consistency.value == 17.1 and not consistency.passed
    assert stability.misses == ["curvature", "depth_zbuffer"]  # no bootstrap: not a pass
    assert consistency_goal(summary[:1]).passed and stability_goal(summary[:1]).passed


@pytest.mark.parametrize(("spread", "passed"), [(0.01, False), (0.20, True)])
def test_a_target_is_degenerate_when_best_and_median_source_are_within_5_percent(spread, passed):
    # full 0.5: best 0.40, median 0.40 + spread * 0.5; the controls, far off, are left out of the median
    means = {"full": 0.5, "scratch": 0.6, "a": 0.40, "b": 0.40 + spread * 0.5, "c": 0.40 + spread * 0.5,
             "d": 0.45 + spread, "random": 5.0, "pixels": 4.0}
    goal = degenerate_goal({"curvature": _table("curvature", means)})
    assert goal.passed is passed and goal.checks[0].value == pytest.approx(spread)
    assert goal.misses == ([] if passed else ["curvature"])


def _affinities(order: list[str]) -> dict[str, float]:
    """First-order affinities ranking `order` from best to worst."""
    return {source: (len(order) - i) / 100 for i, source in enumerate(order)}


def test_random_on_top_is_a_miss_naming_the_target():
    sources = ["a", "b", "c", "d", "e", "f", "pixels", "random"]  # 8 sources: the bottom quarter is ranks 7, 8
    rows = {"normal": _affinities(sources), "reshading": _affinities(["random", *sources[:-1]])}
    random, pixels = controls_goals(rows)
    assert random.value == 1 and random.threshold == 2 and not random.passed  # ceil(15/18 * 2) = 2
    assert random.misses == ["reshading"] and random.checks[1].value == 1
    assert pixels.passed and pixels.value == 2


def test_controls_scale_15_of_18_and_leave_low_level_targets_out_of_the_pixels_check():
    sources = ["a", "b", "c", "d", "e", "f", "pixels", "random"]
    low = ["random", "pixels", "a", "b", "c", "d", "e", "f"]  # both controls on top
    rows = {f"t{i}": _affinities(sources) for i in range(15)}
    rows |= {"autoencoding": _affinities(low), "denoising": _affinities(low), "normal": _affinities(low)}
    random, pixels = controls_goals(rows)
    assert random.value == 15 and random.threshold == 15 and random.passed  # 15 of 18 exactly
    assert [c.target for c in pixels.checks if c.target in ("autoencoding", "denoising")] == []
    assert pixels.misses == ["normal"] and not pixels.passed
    rows["t0"] = _affinities(low)
    assert not controls_goals(rows)[0].passed  # 14 of 18


def test_agreement_needs_a_mean_of_one_half_and_no_target_below_zero():
    def rows(*rhos):
        return [Agreement(f"t{i}", 20, rho, rho, "a", "a", True, 1.0) for i, rho in enumerate(rhos)]

    assert agreement_goal(rows(0.6, 0.7, 0.5)).passed
    below = agreement_goal(rows(0.9, 0.9, -0.02))
    assert not below.passed and below.misses == ["t2"] and below.value == pytest.approx(0.5933, abs=1e-4)
    assert not agreement_goal(rows(0.3, 0.4)).passed


def test_taxonomy_3d_targets_take_3d_sources_and_semantic_targets_semantic_or_3d():
    policy = {"normal": Transfer(("depth_zbuffer", "reshading"), "normal", 0.3),
              "curvature": Transfer(("curvature",), "curvature", 0.5),  # supervised itself
              "autoencoding": Transfer(("pixels",), "autoencoding", 0.2),  # neither 3D nor semantic: not checked
              "class_scene": Transfer(("segment_semantic", "normal"), "class_scene", 0.2)}
    goal = taxonomy_goal(3, "optimal", policy)
    assert goal.passed and goal.key == "taxonomy_b3" and [c.target for c in goal.checks] == [
        "normal", "curvature", "class_scene"]
    policy["keypoints3d"] = Transfer(("denoising",), "keypoints3d", 0.3)
    policy["class_object"] = Transfer(("autoencoding", "segment_semantic"), "class_object", 0.3)
    goal = taxonomy_goal(4, "optimal", policy)
    assert not goal.passed and goal.misses == ["keypoints3d", "class_object"] and goal.value == 0.6
    infeasible = taxonomy_goal(5, "infeasible", {})
    assert not infeasible.passed and "infeasible" in infeasible.note


@pytest.fixture(scope="module")
def measured(faults_run, tmp_path_factory):
    """A copy of the shared small finished run after `taskonomy science` and `taskonomy report` (read-only)."""
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path_factory.mktemp("science"))
    assert cli(config, run_dir, "science") == 0
    assert cli(config, run_dir, "report") == 0
    return run_dir


def test_science_on_a_finished_run_writes_every_goal(measured, faults_run, capsys):
    with (measured / "science.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["goal", "target", "value", "threshold", "pass"]
    assert [r["goal"] for r in rows if r["target"] == "all"] == GOALS
    doc = json.loads((measured / "science.json").read_text())
    assert [g["key"] for g in doc["goals"]] == GOALS and doc["max_order"] == 2
    assert {c["target"] for c in doc["goals"][0]["checks"]} == {"depth_zbuffer", "normal", "class_scene"}
    assert doc["goals_passed"] == sum(g["passed"] for g in doc["goals"])
    assert doc["timings"] and "transfer" in doc["timings"]
    # printed: one line per goal, PASS or MISS, every target's Spearman, the stage timings; exit 0 either way
    config, _ = faults_run
    from taskonomy.cli import main

    assert main(["--run-dir", str(measured), "science", "--budgets", "3"]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith(("science: PASS", "science: MISS")) for line in out.splitlines()) == 9
    assert "per target: depth_zbuffer" in out and "stage timings (run_timings.json)" in out


def test_the_report_shows_the_science_checks(measured):
    page = (measured / "report" / "index.html").read_text()
    assert '<section id="science"><h2>Science checks</h2>' in page
    section = page.split('<section id="science">')[1].split("</section>")[0]
    assert all(f">{key}<" in section for key in GOALS) and ("PASS" in section or "MISS" in section)


@pytest.mark.parametrize("drop", ["stage1_quality.csv", "ahp_summary.csv", "transfers.zarr"])
def test_a_run_that_is_not_finished_is_one_line_and_nothing_written(faults_run, tmp_path, capsys, drop):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path, drop)
    before = snapshot(run_dir)
    assert cli(config, run_dir, "science") == 2
    assert drop.split(".")[0] in one_line(capsys)
    assert snapshot(run_dir) == before


def test_bad_budgets_are_one_line(faults_run, tmp_path, capsys):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    assert cli(config, run_dir, "science", "--budgets", "3,x") == 2
    assert "--budgets" in one_line(capsys) and not (run_dir / "science.csv").exists()
