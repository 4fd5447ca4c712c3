"""`taskonomy stability`: the BIP on bootstrap resamples of the test images, on constructed cases whose answer is
known (clear winners stay; a coin toss between two sources flips), then the command on the shared small run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from _faults import cli, copy_run, one_line, snapshot
from taskonomy.ahp.kernels import affinities
from taskonomy.artifacts import TargetLosses
from taskonomy.taxonomy.bip import Problem, Transfer
from taskonomy.taxonomy.stability import COLUMNS, resampled_affinities, stability

SOURCES = ("a", "b", "c", "d", "e", "f")


def _losses(target: str, means: dict[str, float], noise: float, rng, images: int = 40) -> TargetLosses:
    names = ["full", "scratch", *means]
    rows = [np.full(images, 0.5), np.full(images, 0.6)] + [m + rng.normal(0, noise, images) for m in means.values()]
    return TargetLosses(target, names, [0, 0] + [1] * len(means), np.stack(rows))


def _problem_at(losses: list[TargetLosses]):
    vectors = affinities([t.losses for t in losses]).vectors
    point = {t.target: dict(zip(t.transfers, v)) for t, v in zip(losses, vectors)}

    def problem_at(rows, budget):
        rows = point if rows is None else rows
        transfers = [Transfer((c,), t, v) for t, row in rows.items() for c, v in row.items()
                     if c not in ("full", "scratch")]
        return Problem(SOURCES, tuple(rows), tuple(transfers), budget)

    return problem_at


def test_clear_winners_come_out_the_same_on_every_resample():
    rng = np.random.default_rng(0)
    losses = [_losses(f"t{i}", {s: 0.1 if j == i else 0.9 for j, s in enumerate(SOURCES)}, 0.02, rng)
              for i in range(3)]
    resampled = resampled_affinities(losses, 25, seed=0)
    assert len(resampled) == 25 and all(abs(sum(r["t0"].values()) - 1) < 1e-9 for r in resampled)
    [result] = stability(_problem_at(losses), resampled, [3], 1)
    assert result.supervised == ("a", "b", "c") and result.same_set == 1.0
    assert result.same_transfer == {"t0": 1.0, "t1": 1.0, "t2": 1.0} and result.runner_up == {}
    assert result.sets == [(("a", "b", "c"), 1.0)]


def test_a_coin_toss_between_two_sources_flips_and_is_counted():
    # a beats b on exactly half of the images, b beats a on the other half; both beat c everywhere
    swing = np.where(np.arange(40) % 2 == 0, 0.1, -0.1)
    rows = [np.full(40, 0.5), np.full(40, 0.6), 0.5 + swing, 0.5 - swing, np.full(40, 0.9)]
    losses = [TargetLosses("t0", ["full", "scratch", "a", "b", "c"], [0, 0, 1, 1, 1], np.stack(rows))]
    resampled = resampled_affinities(losses, 40, seed=3)
    [result] = stability(_problem_at(losses), resampled, [1], 1)
    flips = 1 - result.same_set
    assert 0.25 < flips < 0.75 and result.same_transfer["t0"] == result.same_set
    other = "b" if result.supervised == ("a",) else "a"
    assert result.runner_up["t0"] == (other, pytest.approx(flips))
    assert resampled_affinities(losses, 40, seed=3) == resampled  # deterministic for a seed


@pytest.fixture(scope="module")
def resampled_run(faults_run, tmp_path_factory):
    """A copy of the shared small finished run after `taskonomy stability`, `significance` and `report` (read-only)."""
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path_factory.mktemp("stability"))
    assert cli(config, run_dir, "stability", "--budgets", "1,2", "--readout-seeds", "2") == 0
    assert cli(config, run_dir, "significance", "--policies", "50") == 0
    assert cli(config, run_dir, "report") == 0
    return run_dir


def test_stability_on_a_finished_run(resampled_run):
    with (resampled_run / "stability.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS and {r["budget"] for r in rows} == {"1", "2"}
    assert {r["target"] for r in rows} == {"depth_zbuffer", "normal", "class_scene"}
    doc = json.loads((resampled_run / "stability.json").read_text())
    assert doc["resamples"] == 10 and [b["budget"] for b in doc["budgets"]] == [1.0, 2.0]  # ahp.resamples: 10
    for budget in doc["budgets"]:
        shares = [s["share"] for s in budget["sets"]]
        assert 0 <= budget["same_set"] <= 1 and sum(shares) <= 1 + 1e-9 and shares == sorted(shares, reverse=True)
        assert budget["same_set"] == next(s["share"] for s in budget["sets"] if s["supervised"] == budget["supervised"])


def test_a_second_readout_seed_is_trained_beside_the_first_and_compared(resampled_run, faults_run):
    from taskonomy.artifacts import read_losses

    doc = json.loads((resampled_run / "stability.json").read_text())
    assert doc["readout_seeds"] == [2]
    for budget in doc["budgets"]:
        seeds = budget["seeds"]
        assert seeds["same_set"] in (0.0, 1.0) and sum(s["share"] for s in seeds["sets"]) == pytest.approx(1)
        assert set(seeds["same_transfer"]) == set(budget["same_transfer"])
    with (resampled_run / "stability.csv").open() as handle:
        assert all(r["same_transfer_seeds"] in ("0", "1") for r in csv.DictReader(handle))
    # the first seed's losses are the reference run's, untouched; the second seed's are other readouts' losses
    first, second = read_losses(resampled_run), read_losses(resampled_run, store_path=resampled_run /
                                                            "transfers.seed2.zarr")
    reference = read_losses(faults_run[1])
    assert set(second.targets) == set(first.targets)
    for name, table in first.targets.items():
        assert np.array_equal(table.losses, reference.targets[name].losses)
        again = second.targets[name]
        row = table.transfers.index("full")
        assert np.array_equal(again.losses[again.transfers.index("full")], table.losses[row])  # stage I: unchanged
        first_order = [n for n, o in zip(table.transfers, table.orders) if o == 1]
        assert not np.array_equal(again.losses[again.transfers.index(first_order[0])],
                                  table.losses[table.transfers.index(first_order[0])])


def test_readout_seeds_are_resumed_by_stamp_and_the_own_seed_is_refused(resampled_run, faults_run, tmp_path,
                                                                         capsys, monkeypatch):
    def untouched(*args, **kwargs):
        raise AssertionError("a kept row was trained again")

    monkeypatch.setattr("taskonomy.transfer.stage.train_readouts", untouched)
    monkeypatch.setattr("taskonomy.extract.stage1.train_task", untouched)
    config = faults_run[0]
    run_dir = copy_run(resampled_run, tmp_path)
    store = run_dir / "transfers.seed2.zarr"
    def rows() -> dict[str, bytes]:  # every target's arrays and attributes (the root also records wait_share)
        return {name: data for name, data in snapshot(store).items() if name != "zarr.json"}

    before = rows()
    assert cli(config, run_dir, "stability", "--budgets", "1", "--readout-seeds", "2") == 0
    assert rows() == before  # every row kept by its stamp
    before = snapshot(run_dir)
    assert cli(config, run_dir, "stability", "--readout-seeds", "1") == 2  # the config's seed
    assert "run's own readout seed" in one_line(capsys)
    assert snapshot(run_dir) == before
    # transfer.seed set to the run's own seed (the config's seed: 1) names the same readouts: every row is kept
    assert cli(config, run_dir, "--set", "transfer.seed=1", "transfer") == 0


@pytest.mark.parametrize(("args", "says"), [(["--resamples", "0"], "--resamples"), (["--budgets", "x"], "--budgets")])
def test_bad_input_is_one_line_and_nothing_written(faults_run, tmp_path, capsys, args, says):
    config, reference = faults_run
    run_dir = copy_run(reference, tmp_path)
    before = snapshot(run_dir)
    assert cli(config, run_dir, "stability", *args) == 2
    assert says in one_line(capsys)
    assert snapshot(run_dir) == before


def _section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">')[1].split("</section>")[0]


def test_the_report_shows_stability_significance_the_task_tree_and_the_distance_view(resampled_run):
    page = (resampled_run / "report" / "index.html").read_text()
    order = [page.index(f'<section id="{key}">') for key in ("tree", "taxonomy", "stability", "significance")]
    assert order == sorted(order)
    stability = _section(page, "stability")
    assert "10 bootstrap resamples" in stability and "Per target at budget 1" in stability
    assert "<td>depth_zbuffer</td>" in stability
    assert "readout seed 2" in stability and "same transfer, readout seeds 2" in stability
    significance = _section(page, "significance")
    assert "50 random feasible policies" in significance and "max order 2 (3 budgets)" in significance
    assert 'src="significance.png"' in significance and 'src="task_tree.png"' in _section(page, "tree")
    assert (resampled_run / "report" / "task_tree.png").stat().st_size > 10_000
    assert 'src="affinity_distance.png"' in _section(page, "affinity")  # the paper's Figure 7 view, exp(-20 P)
