"""`taskonomy significance`: the taxonomy against random feasible policies, on constructed cases whose answer is
known (a planted best source per target; a flat table), then the command on the shared small finished run."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from _faults import cli, copy_run, one_line, snapshot
from taskonomy.artifacts import TargetLosses
from taskonomy.taxonomy.bip import Problem, Transfer
from taskonomy.taxonomy.evaluate import policy_scores, sweep
from taskonomy.taxonomy.significance import COLUMNS, beats, significance

SOURCES = tuple("abcdefghijklmnopqrstuvwx")  # 24
TARGETS = ("t1", "t2", "t3", "t4")


def _case(planted: bool, seed: int = 0, images: int = 60):
    """Four targets, 24 sources. Planted: target t_i's one clearly best source is the i-th (it wins every image
    against scratch and full, every other source loses every image) and the affinities say so. Flat: every
    source's losses are noise around the same mean and every affinity is equal."""
    rng = np.random.default_rng(seed)
    losses, transfers = {}, []
    for i, target in enumerate(TARGETS):
        rows = {"full": np.full(images, 0.5), "scratch": np.full(images, 0.5) + rng.normal(0, 0.05, images)}
        for j, source in enumerate(SOURCES):
            if planted:
                wins = np.arange(images) < (1 - 0.1 * i) * images if i == j else np.zeros(images, bool)
                rows[source] = np.where(wins, 0.1, 0.9) + rng.uniform(0, 0.01, images)
            else:
                rows[source] = 0.5 + rng.normal(0, 0.05, images)
            transfers.append(Transfer((source,), target, 0.5 - 0.01 * i if planted and i == j else 0.1))
        names = list(rows)
        losses[target] = TargetLosses(target, names, [0, 0] + [1] * len(SOURCES), np.stack(list(rows.values())))

    def problem_at(budget: float, order: int) -> Problem:
        return Problem(SOURCES, TARGETS, tuple(transfers), budget)

    return problem_at, losses


def _test(planted: bool, budgets, seed: int = 0, policies: int = 1000):
    problem_at, losses = _case(planted, seed)
    points = sweep(problem_at, budgets, [1], losses)
    return significance(problem_at, points, lambda policy: policy_scores(policy, losses), policies, seed=7)


def test_a_planted_taxonomy_beats_every_random_policy():
    results = _test(True, [1, 2, 3, 4])
    assert [s.supervised for s in results] == [("a",), ("a", "b"), ("a", "b", "c"), ("a", "b", "c", "d")]
    for s in results:
        # none scores above it; one that ties drew the taxonomy's own policy (budget 1: 1 in 24; from budget 2 on,
        # the same set and every transfer: below 1 in 1000)
        assert s.random.shape == (1000, 2) and (s.random <= np.array(s.taxonomy) + 1e-12).all()
        assert s.beaten("gain") > (0.97 if s.budget == 1 else 0.998) and s.taxonomy[0] > s.band("gain", 0.95)
    assert beats(results) == {1: {"gain": [1, 2, 3, 4], "quality": [1, 2, 3, 4]}}


def test_a_flat_table_beats_about_half():
    shares = [s.beaten(m) for seed in range(12) for s in _test(False, [2, 3], seed, 300) for m in ("gain", "quality")]
    assert 0.35 < np.mean(shares) < 0.65 and min(shares) < 0.3 and max(shares) > 0.7


def test_random_policies_are_feasible_and_the_same_for_a_seed():
    problem_at, losses = _case(True)
    points = sweep(problem_at, [2], [1], losses)
    score = lambda policy: policy_scores(policy, losses)  # noqa: E731
    first, again = (significance(problem_at, points, score, 200, seed=3)[0] for _ in range(2))
    other = significance(problem_at, points, score, 200, seed=4)[0]
    assert np.array_equal(first.random, again.random) and not np.array_equal(first.random, other.random)
    assert ((first.random >= 0) & (first.random <= np.array(first.taxonomy))).all()


def test_random_sets_must_reach_every_target_and_an_infeasible_point_is_said():
    problem_at, losses = _case(True)
    # t1 is reached only from a: a random pair must hold a (7 of the 28 pairs do)
    narrow = lambda budget, order: Problem(SOURCES, TARGETS, tuple(  # noqa: E731
        tr for tr in problem_at(budget, order).transfers if tr.target != "t1" or tr.sources == ("a",)), budget)
    points = sweep(narrow, [2], [1], losses)
    result = significance(narrow, points, lambda policy: policy_scores(policy, losses), 50, seed=0)[0]
    assert len(result.random) == 50 and result.note == ""
    # every pair holds a: t1 always gets its gain of 1, and the pair's other source adds its own target's, if any
    assert set(np.round(result.random[:, 0] * 4, 6)) == {1.0, 1.7, 1.8, 1.9}
    infeasible = dataclasses.replace(points[0], status="infeasible", policy={}, supervised=())
    result = significance(narrow, [infeasible], lambda policy: {}, 50)[0]
    assert result.note == "the BIP is infeasible" and len(result.random) == 0 and np.isnan(result.beaten("gain"))


@pytest.fixture(scope="module")
def tested(faults_run, tmp_path_factory):
    """A copy of the shared small finished run after `taskonomy significance` (read-only)."""
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path_factory.mktemp("significance"))
    assert cli(config, run_dir, "significance", "--policies", "100") == 0
    return run_dir


def test_significance_on_a_finished_run_writes_a_row_per_point(tested):
    with (tested / "significance.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS
    points = {(float(r["budget"]), int(r["max_order"])) for r in rows}
    assert points == {(b, k) for b in (1.0, 2.0, 3.0) for k in (1, 2)}  # three sources, max order 2
    assert all(r["policies"] == "100" and 0 <= float(r["beats_gain"]) <= 1 for r in rows)
    assert (tested / "significance.png").stat().st_size > 10_000


def test_significance_is_deterministic_for_a_seed(faults_run, tested, tmp_path):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    assert cli(config, run_dir, "significance", "--policies", "100") == 0
    assert (run_dir / "significance.csv").read_bytes() == (tested / "significance.csv").read_bytes()
    assert cli(config, run_dir, "significance", "--policies", "100", "--seed", "5") == 0
    assert (run_dir / "significance.csv").read_bytes() != (tested / "significance.csv").read_bytes()


@pytest.mark.parametrize(("args", "says"), [(["--budgets", "1,x"], "--budgets"), (["--policies", "0"], "--policies"),
                                            (["--budgets", "0.5"], "infeasible")])
def test_bad_input_is_one_line_and_nothing_written(faults_run, tmp_path, capsys, args, says):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    before = snapshot(run_dir)
    assert cli(config, run_dir, "significance", *args) == 2
    assert says in one_line(capsys)
    assert snapshot(run_dir) == before


def test_a_run_without_losses_is_one_line(faults_run, tmp_path, capsys):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path, "transfers.zarr")
    assert cli(config, run_dir, "significance") == 2
    assert "transfers.zarr" in one_line(capsys) and not (run_dir / "significance.csv").exists()


def test_the_published_affinities_are_scored_by_the_release_win_rates_and_beat_chance(tmp_path, capsys):
    from taskonomy.cli import main

    run_dir = tmp_path / "p16k"
    assert main(["-q", "--run-dir", str(run_dir), "published"]) == 0
    assert main(["-q", "--run-dir", str(run_dir), "significance", "--budgets", "4", "--max-order", "1",
                 "--policies", "200"]) == 0
    with (run_dir / "significance.csv").open() as handle:
        [row] = list(csv.DictReader(handle))
    assert float(row["beats_gain"]) == 1.0 and float(row["beats_quality"]) == 1.0  # 100% measured at budget 4
    for command in ("stability", "novel"):  # these need per-image losses, which the release has not
        assert main(["-q", "--run-dir", str(run_dir), command]) == 2
        assert "published Taskonomy results" in one_line(capsys)
