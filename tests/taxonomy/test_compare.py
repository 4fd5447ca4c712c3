"""`taskonomy compare`: rank agreement, supervised sets and task trees of two runs or the published results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from _taxonomy_run import TINY_TASKS, write_run
from taskonomy.cli import main
from taskonomy.taxonomy.compare import agreement, compare, open_side

MULTI_VIEW = {"egomotion", "fixated_pose", "nonfixated_pose", "point_matching"}
DEFAULT_TARGETS = {"autoencoding", "denoising", "edge_texture", "keypoints2d", "segment_unsup2d", "depth_zbuffer",
                   "depth_euclidean", "normal", "reshading", "curvature", "edge_occlusion", "keypoints3d",
                   "segment_unsup25d", "room_layout", "vanishing_point", "segment_semantic", "class_object",
                   "class_scene"}  # the targets of configs/default.yaml (its 21 tasks less 3 source-only ones)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A synthetic finished run of the tiny config's tasks, up to order 2 (read-only)."""
    run_dir = tmp_path_factory.mktemp("compare") / "run"
    write_run(run_dir, tasks=TINY_TASKS, max_order=2)
    return run_dir


def test_the_published_1k_and_16k_sets_agree_as_the_issue_measured():
    rows = {r.target: r for r in agreement(open_side("published:1k"), open_side("published:16k"))}
    assert len(rows) == 22 and all(r.sources == 27 for r in rows.values())  # full out, random and t__t in
    assert np.mean([r.spearman for r in rows.values()]) == pytest.approx(0.68, abs=0.005)
    assert all(-0.33 <= rows[t].spearman <= -0.085 for t in MULTI_VIEW)
    assert min(rows[t].spearman for t in MULTI_VIEW) == pytest.approx(-0.32, abs=0.005)
    assert max(rows[t].spearman for t in MULTI_VIEW) == pytest.approx(-0.09, abs=0.005)
    assert np.mean([rows[t].spearman for t in DEFAULT_TARGETS]) == pytest.approx(0.88, abs=0.01)


def test_compare_a_run_with_itself_agrees_everywhere(small_run, capsys):
    assert main(["compare", str(small_run), str(small_run)]) == 0  # written beside A by default
    out = capsys.readouterr().out
    assert "compare: mean over" in out and "Spearman 1.000" in out
    with (small_run / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(float(r["spearman"]) == 1 and float(r["kendall"]) == 1 and r["top1_agree"] == "True"
                        and float(r["top3_overlap"]) == 1 for r in rows)
    summary = json.loads((small_run / "compare.json").read_text())
    assert summary["mean_spearman"] == 1 and summary["tree_correlation"] == 1
    assert [b["jaccard"] for b in summary["budgets"]] == [1.0] * 5
    assert (small_run / "compare.png").stat().st_size > 10_000


def test_compare_a_run_with_the_published_results(small_run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(small_run), "published", "--out", str(out), "--budgets", "3"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    assert summary["b"] == "published:16k" and summary["targets"] == 13  # the run's targets but its novel one
    assert len(summary["budgets"]) == 3 and all(len(b["supervised_b"]) == b["budget"] for b in summary["budgets"])
    with (out / "compare.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 13 and all(int(r["sources"]) == 14 for r in rows)  # 13 others, random (pixels: not there)
    assert all(-1 <= float(r["spearman"]) <= 1 for r in rows)
    assert len([line for line in printed.splitlines() if line.startswith("compare: ")]) == 1 + 13 + 1 + 3 + 1


def test_compare_refuses_an_unknown_side_in_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nowhere"), "published"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neither a run folder nor published" in err
    assert main(["compare", "published:2k", "published"]) == 2
    assert "unknown published set" in capsys.readouterr().err


def test_sets_and_trees_of_two_published_sets():
    result = compare(open_side("published:1k"), open_side("published:16k"), max_budget=3)
    assert [b.supervised_b for b in result.budgets] == [("denoising",), ("denoising", "edge_texture"),
                                                        ("denoising", "edge_texture", "normal")]
    assert all(b.jaccard == 1 for b in result.budgets)
    assert len(result.tree_tasks) == 26 and 0.5 < result.tree_correlation < 1
    assert not math.isnan(result.mean_spearman)
