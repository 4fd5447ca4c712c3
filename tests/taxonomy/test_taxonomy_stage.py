"""Stage IV through the CLI on a synthetic run folder: solve, evaluate, all-for-one, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from _taxonomy_run import NOVEL, TINY_TASKS, write_run
from taskonomy import TaskonomyWarning
from taskonomy.cli import main
from taskonomy.config import load_config
from taskonomy.runfolder import RunFolder
from taskonomy.taxonomy.evaluate import win_rate
from taskonomy.taxonomy.stage import read_affinity, report_budgets

SMALL = ["autoencoding", "jigsaw", "depth_zbuffer", "normal", "reshading", "class_scene"]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """Every task of configs/tiny.yaml, the controls and a target-only task, up to order 3 (read-only)."""
    run_dir = tmp_path_factory.mktemp("taxonomy") / "run"
    write_run(run_dir, tasks=TINY_TASKS, max_order=3)
    return run_dir


@pytest.fixture()
def small_run(tmp_path) -> Path:
    run_dir = tmp_path / "small"
    write_run(run_dir, tasks=SMALL, max_order=2, seed=3)
    return run_dir


def taskonomy(run_dir: Path, *args: str) -> int:
    return main(["-q", "--run-dir", str(run_dir), *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_solve_writes_a_feasible_optimal_policy_and_its_graph(synthetic_run):
    assert taskonomy(synthetic_run, "solve", "--budget", "3", "--max-order", "2") == 0
    doc = json.loads((synthetic_run / "taxonomy.json").read_text())
    assert doc["status"] == "optimal" and doc["budget"] == 3 and doc["max_order"] == 2 and doc["solver"] == "cbc"
    assert 0 < len(doc["supervised"]) <= 3 and not {"random", "pixels"} & set(doc["supervised"])
    affinity = read_affinity(synthetic_run)
    assert set(doc["policy"]) == set(affinity.targets)  # jigsaw is source-only, NOVEL target-only
    assert NOVEL not in doc["supervised"] and "jigsaw" not in doc["policy"]
    lookup = {(tr.name, tr.target): tr.affinity for tr in affinity.transfers}
    for target, chosen in doc["policy"].items():
        assert set(chosen["sources"]) <= set(doc["supervised"]) and chosen["order"] <= 2
        assert chosen["affinity"] == pytest.approx(lookup[(chosen["transfer"], target)])
    assert doc["objective"] == pytest.approx(sum(c["affinity"] for c in doc["policy"].values()))
    assert (synthetic_run / "taxonomy_graph.png").read_bytes()[:4] == b"\x89PNG"


def test_solve_options_subsets_importance_controls_and_highs(synthetic_run):
    assert taskonomy(synthetic_run, "solve", "--budget", "2", "--max-order", "1", "--solver", "highs",
                     "--targets", "normal,reshading,class_scene", "--sources", "normal,class_scene,random",
                     "--importance", "class_scene=5", "--cost", "normal=1.5") == 0
    doc = json.loads((synthetic_run / "taxonomy.json").read_text())
    assert set(doc["policy"]) == {"normal", "reshading", "class_scene"} and doc["solver"] == "highs"
    assert doc["policy"]["class_scene"]["importance"] == 5
    # normal costs 1.5 and class_scene 1, so within 2 only one of them plus the free random control fits
    assert doc["label_cost"] <= 2 and len(set(doc["supervised"]) & {"normal", "class_scene"}) == 1
    assert doc["sources"] == ["normal", "class_scene", "random"]


def test_infeasible_budget_is_one_line_and_exit_2(synthetic_run, capsys):
    assert taskonomy(synthetic_run, "solve", "--budget", "0") == 2
    err = one_line_error(capsys)
    assert "infeasible" in err and "budget 0 is too small" in err


def test_evaluate_sweeps_budgets_and_orders(small_run):
    assert taskonomy(small_run, "evaluate", "--max-order", "2", "--quality", "0.3", "--quality", "0.5") == 0
    for name in ("evaluation.csv", "supervision_saved.csv", "supervision_saved.json", "evaluation_curves.png",
                 "evaluation_taxonomies.png"):
        assert (small_run / name).exists(), name
    with (small_run / "evaluation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    targets = [t for t in SMALL if t != "jigsaw"] + [NOVEL]
    sources = list(SMALL)  # every non-control source: budgets 1..6
    assert {(float(r["budget"]), int(r["max_order"])) for r in rows} <= {
        (float(b), k) for b in range(1, len(sources) + 1) for k in (1, 2)}
    assert {r["target"] for r in rows} == set(targets)
    for r in rows:
        assert 0 <= float(r["gain"]) <= 1 and 0 <= float(r["quality"]) <= 1
        if r["transfer"] == "full":
            assert float(r["quality"]) == 0.5  # self against self
    saved = json.loads((small_run / "supervision_saved.json").read_text())
    assert saved["all_targets"] == len(targets) and [lv["quality"] for lv in saved["levels"]] == [0.3, 0.5] * 2
    assert len(saved["points"]) == 2 * len(sources)
    # the report's taxonomies: max order 2 at budgets 1, 3 and 5 (6 sources), each the sweep's policy there
    run = RunFolder(small_run)
    drawn = json.loads(run.budget_taxonomies.read_text())
    assert drawn["max_order"] == 2 and [e["budget"] for e in drawn["taxonomies"]] == report_budgets(6) == [1, 3, 5]
    points = {(p["budget"], p["max_order"]): p for p in saved["points"]}
    for entry in drawn["taxonomies"]:
        point = points[(entry["budget"], 2)]
        assert entry["file"] == run.budget_taxonomy(entry["budget"]).name and entry["scored"]
        assert (entry["status"], entry["supervised"]) == (point["status"], point["supervised"])
        assert entry["objective"] == pytest.approx(point["objective"]) and entry["max_order"] == 2
        assert run.budget_taxonomy(entry["budget"]).read_bytes()[:4] == b"\x89PNG"
    assert report_budgets(2) == [1] and report_budgets(0) == []


def test_gain_and_quality_are_win_rates_on_the_test_losses():
    from taskonomy.artifacts import TargetLosses
    from taskonomy.taxonomy.evaluate import policy_scores

    losses = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 1.0, 5.0], [0.5, 3.0, 3.0, 1.0]])
    table = {"t": TargetLosses("t", ["scratch", "full", "a"], [0, 0, 1], losses)}
    assert win_rate(losses[2], losses[0]) == 0.5  # ties count for neither
    assert policy_scores({"t": "a"}, table)["t"] == (0.5, 0.5)
    assert policy_scores({"t": "full"}, table)["t"] == (0.25, 0.5)


def test_incomplete_target_is_left_out_with_a_warning(tmp_path):
    run_dir = tmp_path / "run"
    write_run(run_dir, tasks=SMALL[:4], max_order=1, incomplete=("normal",))
    with pytest.warns(TaskonomyWarning, match="target normal is not complete"):
        assert taskonomy(run_dir, "evaluate", "--max-order", "1") == 0
    with (run_dir / "evaluation.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["target"] == "normal"]
    assert rows and all(r["gain"] == r["quality"] == "" for r in rows)  # chosen, but not scored


def test_all_for_one_picks_the_best_transfer_from_the_supervised_sources(synthetic_run):
    assert taskonomy(synthetic_run, "all-for-one", NOVEL, "--supervised", "normal,reshading,class_scene",
                     "--max-order", "2") == 0
    doc = json.loads((synthetic_run / f"all_for_one_{NOVEL}.json").read_text())
    allowed = [tr for tr in read_affinity(synthetic_run).transfers
               if tr.target == NOVEL and set(tr.sources) <= {"normal", "reshading", "class_scene"}]
    for row in doc["orders"]:
        best = max((tr for tr in allowed if tr.order <= row["max_order"]), key=lambda tr: tr.affinity)
        assert row["transfer"] == best.name and 0 <= row["gain"] <= 1
    assert (synthetic_run / f"all_for_one_{NOVEL}.png").exists()
    # without --supervised it takes taxonomy.json's supervised sources
    assert taskonomy(synthetic_run, "solve", "--budget", "3") == 0
    assert taskonomy(synthetic_run, "all-for-one", NOVEL) == 0
    chosen = json.loads((synthetic_run / f"all_for_one_{NOVEL}.json").read_text())
    supervised = json.loads((synthetic_run / "taxonomy.json").read_text())["supervised"]
    assert set(chosen["best"]["sources"]) <= set(supervised)


def _edit_affinity(run_dir: Path, edit) -> None:
    path = run_dir / "affinity.csv"
    rows = list(csv.reader(path.open()))
    edit(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


@pytest.mark.parametrize("args,edit,expected", [
    (["solve"], "remove", "affinity.csv does not exist"),
    (["solve"], lambda rows: rows[1].__setitem__(1, "abc"), "expected a number or nothing, got 'abc'"),
    (["solve"], lambda rows: rows[1].__setitem__(rows[0].index("full"), "0.9"), "sum to"),
    (["solve"], lambda rows: rows[0].__setitem__(1, "Bad/Name"), "invalid task name"),
    (["solve"], lambda rows: rows[0].__setitem__(0, "task"), "first column is 'target'"),
    (["solve", "--targets", "normal,unheard_of"], None, "taxonomy.targets names 'unheard_of'"),
    (["solve", "--sources", "jigsaw,novel_task"], None, "taxonomy.sources names 'novel_task'"),
    (["solve", "--importance", "normal"], None, "expected TASK=NUMBER"),
    (["solve", "--importance", "normal=-1"], None, "importance of 'normal' must be a finite number >= 0"),
    (["all-for-one", "unheard_of", "--supervised", "normal"], None, "'unheard_of' is not a target"),
    (["all-for-one", NOVEL, "--supervised", "novel_task_x"], None, "--supervised names 'novel_task_x'"),
    (["evaluate"], "no_losses", "transfers.zarr does not exist"),
])
def test_bad_inputs_are_one_line_errors(small_run, capsys, args, edit, expected):
    if edit == "remove":
        (small_run / "affinity.csv").unlink()
    elif edit == "no_losses":
        import shutil

        shutil.rmtree(small_run / "transfers.zarr")
    elif edit:
        _edit_affinity(small_run, edit)
    assert taskonomy(small_run, *args) == 2
    assert expected in one_line_error(capsys)


@pytest.mark.parametrize("section,expected", [
    ({"budget": -1}, "taxonomy.budget"),
    ({"cost": {"normal": -0.5}}, "cost of 'normal' must be a finite number >= 0"),
    ({"targets": []}, "expected at least one task"),
    ({"solver": "glpk"}, "taxonomy.solver"),
])
def test_taxonomy_config_is_validated(section, expected):
    from taskonomy import TaskonomyError

    with pytest.raises(TaskonomyError, match=expected):
        load_config(overrides={"taxonomy": section})
