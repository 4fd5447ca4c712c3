"""Would the taxonomy come out the same again? The BIP solved anew on the affinities of bootstrap resamples, and
on those of stage II trained again under other readout seeds.

    taskonomy --run-dir runs/default stability [--resamples 200] [--budgets 1,2,3,4,5] [--max-order 3] \
        [--readout-seeds 1]

Stage III's bootstrap (ahp.kernels.bootstrap with the run's seed: every target sees the same resampled test
images, and the first N resamples are the first N of affinity_ci.csv's) gives each target's AHP affinities on each
resample of the test images; each resample's affinities go through the BIP exactly as affinity.csv's do
(taxonomy.stage: the same hyperedges, sources, targets, importance and cost). Per budget: how often the chosen
supervised set is the taxonomy's, and per target how often its chosen transfer is the taxonomy's. A resample on
which the BIP finds no policy counts as a change.

`--readout-seeds S,...`: stage II again with `transfer.seed` S (the readouts' and scratch networks' initialisation
and batch order; scenes, splits, the validation part and stage I unchanged), its losses stored beside the run's in
transfers.seed<S>.zarr (stamped and resumed as transfers.zarr is: asking again trains nothing), then AHP's point
affinities and the BIP on them, compared as a resample is. The beam picks its higher orders anew under each seed,
so a chosen higher-order transfer may not exist there: that counts as a change too.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy.artifacts import TargetLosses
from taskonomy.config import Config
from taskonomy.runfolder import RunFolder, write_csv, write_json
from taskonomy.taxonomy.bip import Problem, solve

__all__ = ["COLUMNS", "BudgetStability", "resampled_affinities", "run_stability", "seed_affinities", "stability"]

Rows = Mapping[str, Mapping[str, float]]  # target -> affinity column -> affinity
_SHOWN = 3  # the most frequent supervised sets listed per budget


@dataclass(frozen=True)
class BudgetStability:
    """One budget: the taxonomy on the point affinities and how often each part of it recurs over the resamples."""

    budget: float
    max_order: int
    status: str
    supervised: tuple[str, ...]
    policy: dict[str, str]  # target -> transfer name (the taxonomy's)
    resamples: int
    same_set: float  # share of resamples whose supervised set is the taxonomy's
    same_transfer: dict[str, float]  # per target: share of resamples that give it the taxonomy's transfer
    sets: list[tuple[tuple[str, ...], float]]  # the most frequent supervised sets and their shares
    runner_up: dict[str, tuple[str, float]]  # per target: the most frequent other transfer and its share

    @property
    def mean_same_transfer(self) -> float:
        values = list(self.same_transfer.values())
        return float(np.mean(values)) if values else math.nan


def resampled_affinities(losses: Sequence[TargetLosses], resamples: int, seed: int, confidence: float = 0.95,
                         tol: float = 1e-12, max_iter: int = 10_000) -> list[dict[str, dict[str, float]]]:
    """Per resample of the test images: target -> transfer -> AHP affinity (stage III's bootstrap, seeded alike)."""
    from taskonomy.ahp.kernels import bootstrap

    if resamples < 1:
        raise TaskonomyError(f"stability needs at least 1 resample, got {resamples}")
    samples = {t.target: bootstrap(t.losses, resamples, confidence, seed, None, tol, max_iter).samples
               for t in losses}  # (resamples, n_transfers) per target
    return [{t.target: dict(zip(t.transfers, samples[t.target][r].tolist())) for t in losses}
            for r in range(resamples)]


def stability(problem_at: Callable[[Rows | None, float], Problem], resampled: Sequence[Rows],
              budgets: Sequence[float], max_order: int, solver: str = "cbc",
              time_limit: float = 60.0) -> list[BudgetStability]:
    """Per budget: the BIP on the point affinities (`problem_at(None, budget)`) against the BIP on each resample's
    (`problem_at(rows, budget)`)."""
    return [_recurrence(solve(problem_at(None, budget), solver=solver, time_limit=time_limit), budget, max_order,
                        problem_at, resampled, solver, time_limit) for budget in budgets]


def _recurrence(point: Any, budget: float, max_order: int, problem_at: Callable[[Rows | None, float], Problem],
                resampled: Sequence[Rows], solver: str, time_limit: float) -> BudgetStability:
    """How often the taxonomy `point` (the BIP's solution at `budget`) recurs when the BIP is solved on each of
    `resampled`."""
    policy = {t: tr.name for t, tr in point.policy.items()}
    sets: Counter = Counter()
    transfers: dict[str, Counter] = {t: Counter() for t in policy}
    for rows in resampled:
        again = solve(problem_at(rows, budget), solver=solver, time_limit=time_limit)
        sets[again.supervised if again.policy else ("(no policy)",)] += 1
        for t in policy:
            transfers[t][again.policy[t].name if t in again.policy else "(no policy)"] += 1
    n = len(resampled)
    same = {t: counts[policy[t]] / n if n else math.nan for t, counts in transfers.items()}
    runner_up = {}
    for t, counts in transfers.items():
        other = next(((name, c / n) for name, c in counts.most_common() if name != policy[t]), None)
        if other:
            runner_up[t] = other
    return BudgetStability(float(budget), max_order, point.status, point.supervised, policy, n,
                           sets[point.supervised] / n if n and point.policy else math.nan, same,
                           [(s, c / n) for s, c in sets.most_common(_SHOWN)], runner_up)


COLUMNS = ["budget", "max_order", "target", "transfer", "same_transfer", "runner_up", "runner_up_share",
           "same_transfer_seeds", "seeds_runner_up"]


def seed_affinities(config: Config, run_dir: str | Path, seeds: Sequence[int], targets: Sequence[str],
                    progress: bool = False) -> list[dict[str, dict[str, float]]]:
    """Per readout seed: target -> transfer -> AHP affinity, from stage II trained again under that seed into
    transfers.seed<S>.zarr (kept rows reused by their stamps)."""
    from taskonomy import artifacts
    from taskonomy.ahp.kernels import affinities
    from taskonomy.transfer.stage import run_transfer, stage_seed

    run, own = RunFolder(run_dir, config.storage), stage_seed(config)  # the stores where the run's are
    if own in seeds:
        raise TaskonomyError(f"--readout-seeds: {own} is the run's own readout seed (transfer.seed, else seed); "
                             f"name other seeds")
    out = []
    for seed in seeds:
        again = config.model_copy(update={"transfer": config.transfer.model_copy(update={"seed": int(seed)})})
        path = run.seed_transfers(seed)
        run_transfer(again, run_dir, progress=progress, store_path=path)
        table = artifacts.read_losses(run_dir, targets, purpose=f"readout seed {seed}", store_path=path)
        missing = [t for t in targets if t not in table.targets]
        if missing:
            raise TaskonomyError(f"target {missing[0]} has no complete losses in {path}")
        found = list(table.targets.values())
        result = affinities([t.losses for t in found], config.ahp.tolerance, config.ahp.max_iter)
        out.append({t.target: dict(zip(t.transfers, v.tolist())) for t, v in zip(found, result.vectors)})
    return out


def run_stability(config: Config, run_dir: str | Path, *, resamples: int | None = None,
                  budgets: Sequence[float] | None = None, max_order: int | None = None,
                  readout_seeds: Sequence[int] = (),
                  progress: Callable[[BudgetStability, BudgetStability | None], None] | None = None,
                  train_progress: bool = False) -> tuple[list[BudgetStability], list[Path]]:
    """Resample the test images, solve the BIP on each resample's affinities at every budget (default 1..5, as far
    as there are sources), and on each other readout seed's; write stability.csv (per target) and stability.json
    (per budget). `progress(bootstrap, seeds)` as each budget is done (seeds: None without readout seeds)."""
    from taskonomy import artifacts
    from taskonomy.taxonomy.bip import Transfer
    from taskonomy.taxonomy.stage import hyperedges, make_problem, read_affinity

    run_dir = Path(run_dir)
    cfg, top = config.taxonomy, max_order or config.taxonomy.max_order
    affinity = read_affinity(run_dir)
    if artifacts.read_published(run_dir) is not None:
        raise TaskonomyError(f"{run_dir} holds the published Taskonomy results: no per-image losses to resample")
    table = artifacts.read_losses(run_dir, affinity.targets, purpose="the stability")
    missing = [t for t in affinity.targets if t not in table.targets]
    if missing:
        raise TaskonomyError(f"target {missing[0]} of {affinity.path} has no complete losses in {table.path}; "
                             f"rerun `taskonomy transfer`")
    probe = make_problem(affinity, cfg, 0.0, top)
    budgets = [float(b) for b in (budgets or range(1, min(5, len(probe.sources)) + 1))]
    count = config.ahp.resamples if resamples is None else resamples
    resampled = resampled_affinities(list(table.targets.values()), count, config.seed, config.ahp.confidence,
                                     config.ahp.tolerance, config.ahp.max_iter)

    seeded = seed_affinities(config, run_dir, readout_seeds, affinity.targets, train_progress) if readout_seeds \
        else []

    def problem_at(rows: Rows | None, budget: float) -> Problem:
        if rows is None:
            return make_problem(affinity, cfg, budget, top)
        edges = hyperedges(rows)
        transfers = [Transfer(sources, target, value) for (sources, target), (value, _) in edges.items()]
        return make_problem(dataclasses.replace(affinity, transfers=transfers), cfg, budget, top)

    results, by_seed = [], []
    for budget in budgets:
        point = solve(problem_at(None, budget), solver=cfg.solver, time_limit=cfg.time_limit)
        results.append(_recurrence(point, budget, top, problem_at, resampled, cfg.solver, cfg.time_limit))
        by_seed.append(_recurrence(point, budget, top, problem_at, seeded, cfg.solver, cfg.time_limit)
                       if seeded else None)
        if progress:
            progress(results[-1], by_seed[-1])
    rows = []
    for s, other in zip(results, by_seed, strict=True):
        for t, name in s.policy.items():
            seeds = [other.same_transfer[t], other.runner_up.get(t, (None,))[0]] if other else [None, None]
            rows.append([s.budget, s.max_order, t, name, s.same_transfer[t], *s.runner_up.get(t, (None, None)),
                         *seeds])
    run = RunFolder(run_dir)
    summary = _summary(results, count, config.seed)
    if seeded:
        summary["readout_seeds"] = [int(s) for s in readout_seeds]
        for entry, s in zip(summary["budgets"], by_seed, strict=True):
            entry["seeds"] = _shares(s)
    return results, [write_csv(run.stability_csv, COLUMNS, rows, digits=6), write_json(run.stability_json, summary)]


def _number(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def _shares(s: BudgetStability) -> dict[str, Any]:
    """How often one budget's taxonomy recurs, as stability.json records it."""
    return {"same_set": _number(s.same_set), "mean_same_transfer": _number(s.mean_same_transfer),
            "sets": [{"supervised": list(names), "share": round(share, 6)} for names, share in s.sets],
            "same_transfer": {t: round(v, 6) for t, v in s.same_transfer.items()}}


def _summary(results: Sequence[BudgetStability], resamples: int, seed: int) -> dict[str, Any]:
    return {"resamples": resamples, "seed": seed,
            "note": "bootstrap resamples of the test images, as stage III's affinity intervals; a resample on which "
                    "the BIP finds no policy counts as a change",
            "budgets": [{"budget": s.budget, "max_order": s.max_order, "status": s.status,
                         "supervised": list(s.supervised), **_shares(s)} for s in results]}
