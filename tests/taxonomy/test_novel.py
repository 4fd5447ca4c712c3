"""`taskonomy novel`: AHP played again without the left-out task, then the command on the shared small run."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from _faults import cli, copy_run, one_line, snapshot
from taskonomy.ahp.kernels import affinities
from taskonomy.artifacts import TargetLosses
from taskonomy.taxonomy.novel import COLUMNS, affinities_without


def _table(target: str, names: list[str], seed: int) -> TargetLosses:
    rng = np.random.default_rng(seed)
    orders = [0 if n in ("full", "scratch") else n.count("+") + 1 for n in names]
    return TargetLosses(target, names, orders, rng.uniform(0, 1, (len(names), 50)))


def test_the_tournament_is_played_again_without_the_left_out_task():
    losses = {"t": _table("t", ["full", "a", "b", "c", "a+b", "scratch"], 0),
              "a": _table("a", ["full", "b", "c", "b+c", "scratch"], 1),
              "c": _table("c", ["full", "a", "b", "a+b", "scratch"], 2)}
    rows = affinities_without(losses, "a")
    assert set(rows) == {"t", "c"}  # a is no target any more
    assert list(rows["t"]) == ["full", "b", "c", "scratch"] and list(rows["c"]) == ["full", "b", "scratch"]
    sliced = losses["t"].losses[[0, 2, 3, 5]]
    assert np.allclose(list(rows["t"].values()), affinities(sliced).vectors[0])
    # not affinity.csv's row with a's columns cut out and renormalised: a took part in every comparison there
    full = affinities(losses["t"].losses).vectors[0][[0, 2, 3, 5]]
    assert not np.allclose(list(rows["t"].values()), full / full.sum())


@pytest.fixture(scope="module")
def novel_run(faults_run, tmp_path_factory):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path_factory.mktemp("novel"))
    assert cli(config, run_dir, "novel", "--budget", "1") == 0
    assert cli(config, run_dir, "report") == 0
    return run_dir


def test_every_task_is_left_out_and_reached_from_the_others_supervised_set(novel_run):
    with (novel_run / "novel.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS and [r["task"] for r in rows] == ["depth_zbuffer", "normal", "class_scene"]
    for row in rows:
        supervised = row["supervised"].split()
        assert row["task"] not in supervised and len(supervised) == 1  # budget 1
        sources = row["all_for_one_transfer"].split("+")
        assert set(sources) <= set(supervised) and row["task"] not in sources
        assert 0 <= float(row["all_for_one_quality"]) <= 1 and row["random_transfer"] == "random"
    assert (novel_run / "novel.png").stat().st_size > 10_000
    page = (novel_run / "report" / "index.html").read_text()
    section = page.split('<section id="novel">')[1].split("</section>")[0]
    assert all(f"<td>{r['task']}</td>" in section for r in rows) and 'src="novel.png"' in section


@pytest.mark.parametrize(("args", "says"), [(["--budget", "-1"], "--budget"), (["--max-order", "0"], "--max-order")])
def test_bad_input_is_one_line_and_nothing_written(faults_run, tmp_path, capsys, args, says):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    before = snapshot(run_dir)
    assert cli(config, run_dir, "novel", *args) == 2
    assert says in one_line(capsys)
    assert snapshot(run_dir) == before
