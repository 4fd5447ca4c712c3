"""Novel tasks (the paper's Figure 10): each task left out of the dictionary in turn and reached by all-for-one.

    taskonomy --run-dir runs/default novel [--budget 3] [--max-order 3]

For each target t: t leaves the dictionary as a target and as a source. Every other target's AHP is recomputed
from its per-image test losses without the transfers that read t (slicing affinity.csv's rows and renormalising
would keep t in every tournament), the BIP is solved over the others at the budget, and t is reached by
all-for-one: the transfer into t of order <= k, all of whose sources are supervised, of highest affinity in t's
own row of affinity.csv (t's `full` cannot be chosen: t is not supervised). Its gain and quality on the test
images stand beside those of t's best single source (chosen on validation, controls left out), random and pixels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskonomy import TaskonomyError
from taskonomy.artifacts import TargetLosses
from taskonomy.config import Config
from taskonomy.runfolder import RunFolder, save_figure, write_csv

__all__ = ["COLUMNS", "POLICIES", "Novel", "affinities_without", "mean_scores", "run_novel"]

POLICIES = ("all_for_one", "best_source", "random", "pixels")


@dataclass(frozen=True)
class Novel:
    """One left-out task: the others' supervised set, its all-for-one transfer and (gain, quality) per policy."""

    task: str
    supervised: tuple[str, ...]
    status: str
    transfers: dict[str, str | None]  # policy -> transfer name (None: not available)
    scores: dict[str, tuple[float, float]]  # policy -> (gain, quality)


def affinities_without(losses: Mapping[str, TargetLosses], task: str, tol: float = 1e-12,
                       max_iter: int = 10_000) -> dict[str, dict[str, float]]:
    """AHP affinities of every target but `task` over its transfers that do not read `task` (target -> column ->
    affinity): the tournament played again without them."""
    from taskonomy.ahp.kernels import affinities

    kept = {}
    for target, table in losses.items():
        if target == task:
            continue
        rows = [i for i, name in enumerate(table.transfers) if task not in name.split("+")]
        kept[target] = ([table.transfers[i] for i in rows], table.losses[rows])
    result = affinities([values for _, values in kept.values()], tol, max_iter)
    return {target: dict(zip(names, vector.tolist())) for (target, (names, _)), vector in zip(kept.items(),
                                                                                               result.vectors)}


def _scores(table: TargetLosses, name: str | None) -> tuple[float, float]:
    from taskonomy.taxonomy.evaluate import policy_scores

    if name is None or name not in table.transfers:
        return (math.nan, math.nan)
    return policy_scores({table.target: name}, {table.target: table})[table.target]


def run_novel(config: Config, run_dir: str | Path, *, budget: float | None = None, max_order: int | None = None,
              progress: Callable[[Novel], None] | None = None) -> tuple[list[Novel], list[Path]]:
    """Leave every target out in turn; write novel.csv and novel.png."""
    from taskonomy import artifacts
    from taskonomy.taxonomy.bip import Transfer, all_for_one, solve
    from taskonomy.taxonomy.evaluate import best_first_order
    from taskonomy.taxonomy.graph import novel_figure
    from taskonomy.taxonomy.stage import hyperedges, make_problem, read_affinity

    run_dir = Path(run_dir)
    cfg = config.taxonomy
    budget = cfg.budget if budget is None else budget
    top = max_order or cfg.max_order
    affinity = read_affinity(run_dir)
    if artifacts.read_published(run_dir) is not None:
        raise TaskonomyError(f"{run_dir} holds the published Taskonomy results: no per-image losses to recompute "
                             f"AHP from")
    losses = artifacts.read_losses(run_dir, affinity.targets, purpose="the novel tasks").targets
    if len(losses) < 2:
        raise TaskonomyError(f"{run_dir}: leaving a task out needs at least 2 complete targets in transfers.zarr")
    controls = {"random", "pixels"}
    results = []
    for task in [t for t in affinity.targets if t in losses]:
        rows = affinities_without(losses, task, config.ahp.tolerance, config.ahp.max_iter)
        edges = hyperedges(rows)
        others = dataclasses.replace(
            affinity, targets=[t for t in affinity.targets if t != task and t in rows],
            transfers=[Transfer(s, t, v) for (s, t), (v, _) in edges.items()],
            sources=[s for s in affinity.sources if s != task])
        solution = solve(make_problem(others, _without(cfg, task), budget, top), solver=cfg.solver,
                         time_limit=cfg.time_limit)
        table = losses[task]
        chosen = all_for_one([tr for tr in affinity.transfers if tr.target == task and tr.name != "full"], task,
                             solution.supervised, top) if solution.policy else None
        try:
            best = best_first_order(table, tuple(controls))
        except TaskonomyError:  # no validation losses: no best single source chosen fairly
            best = None
        names = {"all_for_one": chosen.name if chosen else None, "best_source": best,
                 "random": "random" if "random" in table.transfers else None,
                 "pixels": "pixels" if "pixels" in table.transfers else None}
        results.append(Novel(task, solution.supervised, solution.status, names,
                             {p: _scores(table, n) for p, n in names.items()}))
        if progress:
            progress(results[-1])
    out = RunFolder(run_dir)
    csv_rows = [[r.task, " ".join(r.supervised), r.status,
                 *[v for p in POLICIES for v in (r.transfers[p], *r.scores[p])]] for r in results]
    return results, [write_csv(out.novel_csv, COLUMNS, csv_rows, digits=6),
                     save_figure(out.novel_figure, novel_figure(results, budget, top))]


def _without(cfg, task: str):
    """The taxonomy config with `task` gone from its lists of targets and sources and its weights."""
    update = {key: [n for n in getattr(cfg, key) if n != task] for key in ("targets", "sources")
              if getattr(cfg, key) != "all"}
    update |= {key: {n: w for n, w in getattr(cfg, key).items() if n != task} for key in ("importance", "cost")}
    return cfg.model_copy(update=update)


COLUMNS = ["task", "supervised", "status", *[f"{p}_{c}" for p in POLICIES for c in ("transfer", "gain", "quality")]]


def mean_scores(results: Sequence[Novel]) -> dict[str, tuple[float, float]]:
    """Per policy: mean gain and quality over the left-out tasks that have them."""
    out = {}
    for policy in POLICIES:
        values = np.array([r.scores[policy] for r in results], dtype=float).reshape(-1, 2)
        out[policy] = tuple(float(np.nanmean(values[:, k])) if np.isfinite(values[:, k]).any() else math.nan
                            for k in range(2))
    return out
