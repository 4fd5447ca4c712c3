"""Is the taxonomy better than chance? Its policies against random feasible policies (the paper's Figure 11).

    taskonomy --run-dir runs/default significance [--policies 1000] [--budgets 1,2,3] [--max-order 3] [--seed 0]

For every budget and max order k, the BIP's policy (as `taskonomy evaluate` solves and scores it) against
`policies` random feasible policies: a random supervised set of as many tasks as the taxonomy supervises, within
the budget (the same label cost under the default unit costs), that gives every target a transfer of order <= k;
then for each target a transfer drawn uniformly from those of order <= k whose sources are all in the set (full,
when the target itself is in it). Every policy is scored on the same per-image test losses (in a folder of the
published results, by the release's win rates), so the two differ only in what they choose. The share of random
policies whose mean gain (quality) lies below the taxonomy's, ties counting half, is the share it beats.
Deterministic for a seed: each point draws from its own generator, seeded by (seed, max order, budget).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taskonomy import TaskonomyError
from taskonomy.config import Config
from taskonomy.runfolder import RunFolder, save_figure, write_csv
from taskonomy.taxonomy.bip import Problem, Transfer
from taskonomy.taxonomy.evaluate import Scorer, SweepPoint, policy_scores

__all__ = ["COLUMNS", "METRICS", "Candidates", "Significance", "beats", "candidates", "random_scores",
           "run_significance", "significance"]

METRICS = ("gain", "quality")
_TIE = 1e-12  # means this close count as a tie: the taxonomy's and a random policy's are summed in other orders
_DRAWS = 200  # random supervised sets drawn per policy asked for before a point is given up as infeasible


@dataclass(frozen=True)
class Candidates:
    """One target's transfers of order <= k from the BIP's sources, as masks over the sources, and their scores."""

    target: str
    transfers: tuple[Transfer, ...]
    masks: np.ndarray  # (n_transfers, n_sources) bool: the sources each transfer reads
    scores: np.ndarray  # (n_transfers, 2) gain and quality; NaN where the scorer has none
    scored: bool  # whether the scorer scores this target at all (a target without losses is only reached)


@dataclass(frozen=True)
class Significance:
    """One (budget, max order): the taxonomy's mean gain and quality and those of each random policy."""

    budget: float
    max_order: int
    status: str
    supervised: tuple[str, ...]
    taxonomy: tuple[float, float]  # mean gain, mean quality
    random: np.ndarray  # (n_policies, 2) mean gain and quality of each random policy
    note: str = ""

    def beaten(self, metric: str) -> float:
        """Share of random policies whose mean `metric` lies below the taxonomy's (ties count half)."""
        k = METRICS.index(metric)
        own, others = self.taxonomy[k], self.random[:, k]
        others = others[~np.isnan(others)]
        if math.isnan(own) or not len(others):
            return math.nan
        below = np.sum(others < own - _TIE)
        ties = np.sum(np.abs(others - own) <= _TIE)
        return float((below + 0.5 * ties) / len(others))

    def band(self, metric: str, q: float) -> float:
        """The random policies' q-quantile (0..1) of mean `metric`."""
        values = self.random[:, METRICS.index(metric)]
        values = values[~np.isnan(values)]
        return float(np.quantile(values, q)) if len(values) else math.nan


def candidates(problem: Problem, score: Scorer, cache: dict | None = None) -> list[Candidates]:
    """Per target of `problem`: its usable transfers (every order the problem holds, none pruned) and their
    scores, each transfer scored alone by `score`; `cache` ((target, name) -> scores) is shared across orders."""
    cache = {} if cache is None else cache
    index = {s: i for i, s in enumerate(problem.sources)}
    by_target: dict[str, list[Transfer]] = {t: [] for t in problem.targets}
    for tr in problem.usable_transfers():
        by_target[tr.target].append(tr)
    out = []
    for target, transfers in by_target.items():
        masks = np.zeros((len(transfers), len(index)), bool)
        scores = np.full((len(transfers), 2), math.nan)
        for i, tr in enumerate(transfers):
            masks[i, [index[s] for s in tr.sources]] = True
            if (target, tr.name) not in cache:
                cache[(target, tr.name)] = score({target: tr.name}).get(target)
            if cache[(target, tr.name)] is not None:
                scores[i] = cache[(target, tr.name)]
        scored = any(cache[(target, tr.name)] is not None for tr in transfers)
        out.append(Candidates(target, tuple(transfers), masks, scores, scored))
    return out


def _draw_sets(rng: np.random.Generator, n_sources: int, size: int, costs: np.ndarray, budget: float,
               targets: Sequence[Candidates], policies: int) -> np.ndarray | None:
    """(policies, n_sources) bool: random sets of `size` sources within `budget` from which every target has a
    usable transfer; None when too few of the draws are feasible."""
    kept: list[np.ndarray] = []
    found, drawn = 0, 0
    while found < policies and drawn < _DRAWS * policies:
        batch = min(max(policies, 256), _DRAWS * policies - drawn)
        order = np.argsort(rng.random((batch, n_sources)), axis=1)[:, :size]  # a uniform subset per row
        sets = np.zeros((batch, n_sources), bool)
        np.put_along_axis(sets, order, True, axis=1)
        ok = sets.astype(float) @ costs <= budget + 1e-9
        for c in targets:  # a transfer is usable when it reads no source outside the set
            ok &= ((c.masks.astype(np.int32) @ (~sets).T.astype(np.int32)) == 0).any(axis=0)
        kept.append(sets[ok])
        found += int(ok.sum())
        drawn += batch
    if found < policies:
        return None
    return np.concatenate(kept)[:policies]


def random_scores(problem: Problem, targets: Sequence[Candidates], size: int, policies: int,
                  rng: np.random.Generator) -> np.ndarray | None:
    """(policies, 2): mean gain and quality of random feasible policies with `size` supervised tasks (None: no
    such policy turned up in the draws). Means over the scored targets, NaN left out, as SweepPoint's."""
    costs = np.array([problem.cost_of(s) for s in problem.sources])
    sets = _draw_sets(rng, len(problem.sources), size, costs, problem.budget, targets, policies)
    if sets is None:
        return None
    scored = [c for c in targets if c.scored]
    per_target = np.full((policies, len(scored), 2), math.nan)  # (policies, targets, metric)
    for j, c in enumerate(scored):
        usable = (c.masks.astype(np.int32) @ (~sets).T.astype(np.int32)) == 0  # (n_transfers, policies)
        keys = np.where(usable, rng.random(usable.shape), -1.0)
        per_target[:, j] = c.scores[np.argmax(keys, axis=0)]
    counts = (~np.isnan(per_target)).sum(axis=1)
    sums = np.nansum(per_target, axis=1)
    return np.divide(sums, counts, out=np.full((policies, 2), math.nan), where=counts > 0)


def significance(problem_at: Callable[[float, int], Problem], points: Sequence[SweepPoint], score: Scorer,
                 policies: int = 1000, seed: int = 0,
                 progress: Callable[[Significance], None] | None = None) -> list[Significance]:
    """Each swept point (`evaluate.sweep`) against `policies` random feasible policies of `problem_at(budget, k)`,
    all scored by `score` (policy -> (gain, quality) per target)."""
    if policies < 1:
        raise TaskonomyError(f"significance needs at least 1 random policy per point, got {policies}")
    cache: dict = {}
    by_order: dict[int, list[Candidates]] = {}
    out = []
    for point in points:
        empty = np.full((0, 2), math.nan)
        own = (point.mean_gain, point.mean_quality)
        if not point.policy:
            out.append(Significance(point.budget, point.max_order, point.status, (), own, empty,
                                    f"the BIP is {point.status}"))
            if progress:
                progress(out[-1])
            continue
        problem = problem_at(point.budget, point.max_order)
        if point.max_order not in by_order:
            by_order[point.max_order] = candidates(problem, score, cache)
        rng = np.random.default_rng([seed, point.max_order, int(round(point.budget * 1000))])
        size = len(point.supervised)
        drawn = random_scores(problem, by_order[point.max_order], size, policies, rng)
        note = "" if drawn is not None else (f"fewer than {policies} of {_DRAWS * policies} random sets of {size} "
                                             f"tasks give every target a transfer")
        out.append(Significance(point.budget, point.max_order, point.status, point.supervised, own,
                                empty if drawn is None else drawn, note))
        if progress:
            progress(out[-1])
    return out


COLUMNS = ["budget", "max_order", "status", "supervised", "policies", "gain", "random_gain_mean", "random_gain_p5",
           "random_gain_p50", "random_gain_p95", "beats_gain", "quality", "random_quality_mean", "random_quality_p5",
           "random_quality_p50", "random_quality_p95", "beats_quality", "note"]


def _row(s: Significance) -> list:
    row: list = [s.budget, s.max_order, s.status, " ".join(s.supervised), len(s.random)]
    for k, metric in enumerate(METRICS):
        values = s.random[:, k]
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        row += [s.taxonomy[k], mean, *(s.band(metric, q) for q in (0.05, 0.5, 0.95)), s.beaten(metric)]
    return [*row, s.note]


def run_significance(config: Config, run_dir: str | Path, *, policies: int = 1000,
                     budgets: Sequence[float] | None = None, max_order: int | None = None, seed: int | None = None,
                     progress: Callable[[Significance], None] | None = None) -> tuple[list[Significance], list[Path]]:
    """Sweep the BIP as `taskonomy evaluate` does and test each point against random policies; write
    significance.csv and significance.png."""
    from taskonomy.taxonomy.graph import significance_figure
    from taskonomy.taxonomy.stage import make_problem, published_scorer, read_affinity, sweep_policies

    run_dir = Path(run_dir)
    top = max_order or config.taxonomy.max_order
    points, _, losses = sweep_policies(config, run_dir, top, budgets)
    affinity = read_affinity(run_dir)
    scorer = published_scorer(run_dir, affinity) or (lambda policy: policy_scores(policy, losses))
    results = significance(lambda b, k: make_problem(affinity, config.taxonomy, b, k), points, scorer, policies,
                           config.seed if seed is None else seed, progress)
    run = RunFolder(run_dir)
    return results, [write_csv(run.significance_csv, COLUMNS, [_row(s) for s in results], digits=6),
                     save_figure(run.significance_figure, significance_figure(results))]


def beats(results: Sequence[Significance], share: float = 0.95) -> Mapping[int, dict[str, list[float]]]:
    """Per max order and metric: the budgets at which the taxonomy beats at least `share` of random policies."""
    out: dict[int, dict[str, list[float]]] = {}
    for s in results:
        for metric in METRICS:
            hit = out.setdefault(s.max_order, {m: [] for m in METRICS})[metric]
            if s.beaten(metric) >= share:
                hit.append(s.budget)
    return out
