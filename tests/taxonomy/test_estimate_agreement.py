"""Agreement of estimator scores with AHP: constructed cases with known answers (the same ranking, the reverse, the
same normalised rows and so the same taxonomies), the published comparison, the figure and the report section."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from _faults import cli, copy_run
from taskonomy.artifacts import write_affinity
from taskonomy.report import build_report
from taskonomy.runfolder import RunFolder, write_csv
from taskonomy.taxonomy.estimate_agreement import measure, normalise, run_agreement, tournament

TASKS = ["depth_zbuffer", "normal", "reshading", "edge_texture", "class_scene"]
SOURCES = [*TASKS, "random", "pixels"]


def test_normalise_keeps_the_order_and_sums_to_one():
    row = normalise({"full": -0.5, "a": -2.0, "b": -1.0, "c": -1.5})
    assert list(row) == ["full", "a", "b", "c"] and sum(row.values()) == pytest.approx(1.0)
    assert row["a"] == 0.0 and row["full"] > row["b"] > row["c"] > row["a"]
    assert normalise({"a": 3.0, "b": 3.0}) == {"a": 0.5, "b": 0.5}
    ranked = tournament({"full": -0.5, "a": -2.0, "b": -1.0, "c": -1.5})
    assert list(ranked) == ["full", "a", "b", "c"] and sum(ranked.values()) == pytest.approx(1.0)
    assert ranked["full"] > ranked["b"] > ranked["c"] > ranked["a"] > 0


def _scores(seed: int) -> np.ndarray:
    """(targets, full + sources) scores, NaN where a source is the target itself."""
    values = np.random.default_rng(seed).normal(size=(len(TASKS), 1 + len(SOURCES)))
    values[:, 0] += 3.0  # the target's own features score best, as `full` does in AHP
    for i, target in enumerate(TASKS):
        values[i, 1 + SOURCES.index(target)] = np.nan
    return values


def _folder(tmp_path, estimators: dict[str, np.ndarray], affinity: np.ndarray):
    run = RunFolder(tmp_path)
    run.estimates.mkdir()
    columns = ["full", *SOURCES]
    for name, values in estimators.items():
        write_csv(run.estimate_table(name), ["target", *columns], [[t, *r] for t, r in zip(TASKS, values.tolist())])
    write_affinity(run.affinity, TASKS, columns, affinity)
    return run


def _as_affinity(scores: np.ndarray) -> np.ndarray:
    """Rows normalised as the agreement normalises an estimator's: AHP-shaped (positive, summing to 1)."""
    out = np.full_like(scores, np.nan)
    for i, row in enumerate(scores):
        kept = ~np.isnan(row)
        out[i, kept] = list(normalise(dict(enumerate(row[kept]))).values())
    return out


def test_an_estimator_that_ranks_as_ahp_agrees_everywhere_and_its_reverse_nowhere(tmp_path):
    scores = _scores(0)
    run = _folder(tmp_path, {"logme": 2.0 * scores - 7.0, "hscore": -scores}, _as_affinity(scores))
    same, reverse = measure(run.path, ["logme", "hscore"], budgets=4)
    assert [r.target for r in same.ahp] == TASKS
    assert all(r.spearman == pytest.approx(1.0) and r.kendall == pytest.approx(1.0) and r.top1_agree
               and r.top3_overlap == 1.0 for r in same.ahp)
    # an affine map of the scores normalises to AHP's own rows: the BIP chooses the same taxonomy at every budget
    assert [b.budget for b in same.budgets] == [1, 2, 3, 4]
    assert all(b.same_set and b.same_transfer == 1.0 and b.jaccard == 1.0 for b in same.budgets)
    assert [b.budget for b in same.budgets_tournament] == [1, 2, 3, 4]
    assert all(r.spearman == pytest.approx(-1.0) and not r.top1_agree for r in reverse.ahp)
    assert all(r.sources == len(SOURCES) - 1 for r in same.ahp)
    # the run shares these tasks with the published results: each target is compared with them too
    assert {r.target for r in same.published} == set(TASKS)
    assert all(-1 <= r.spearman <= 1 for r in same.published)
    summary = same.summary()
    assert summary["mean_spearman"] == pytest.approx(1.0) and summary["budgets_same_set"] == 4


def test_the_agreement_files_and_figure(tmp_path):
    scores = _scores(1)
    noisy = scores + np.random.default_rng(2).normal(scale=0.7, size=scores.shape)
    run = _folder(tmp_path, {"parc": noisy, "ridge": scores}, _as_affinity(scores))
    results, paths = run_agreement(run.path, ["parc", "ridge"], {"estimators": {"parc": 0.1, "ridge": 0.2}}, 3)
    assert paths == [run.estimate_agreement_csv, run.estimate_agreement_json, run.estimate_agreement_figure]
    doc = json.loads(run.estimate_agreement_json.read_text())
    assert [e["estimator"] for e in doc["estimators"]] == ["parc", "ridge"] and doc["seconds"]["ridge"] == 0.2
    assert 0 < doc["estimators"][0]["mean_spearman"] < 1 and doc["estimators"][1]["mean_spearman"] == 1.0
    lines = run.estimate_agreement_csv.read_text().splitlines()
    assert lines[0].startswith("estimator,reference,target,sources,spearman")
    assert sum(line.startswith("parc,ahp,") for line in lines) == len(TASKS)
    assert run.estimate_agreement_figure.stat().st_size > 10_000
    assert not math.isnan(results[0].ahp[0].spearman)


def test_the_report_shows_the_estimators(faults_run, tmp_path):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    assert cli(config, run_dir, "estimate", "--estimators", "logme,ridge") == 0
    page = build_report(run_dir).read_text()
    assert "Transferability estimators" in page and "estimate_agreement.png" in page
    scale = json.loads(RunFolder(run_dir).estimate_agreement_json.read_text())["readouts_validation_mean_spearman"]
    assert scale is not None and -1 <= scale <= 1
    assert (RunFolder(run_dir).report / "estimate_agreement.png").is_file()


def test_an_estimator_that_scored_nothing_has_no_agreement_and_no_taxonomy(tmp_path):
    scores = _scores(3)
    run = _folder(tmp_path, {"ridge": np.full_like(scores, np.nan), "logme": scores}, _as_affinity(scores))
    results, _ = run_agreement(run.path, ["ridge", "logme"])
    assert results[0].ahp == [] and results[0].budgets == [] and results[0].summary()["mean_spearman"] is None
    assert results[1].summary()["mean_spearman"] == pytest.approx(1.0)
