"""Policy evaluation as in the paper's Figures 8-10: gain and quality per target over budgets and max orders.

    taskonomy --config configs/tiny.yaml evaluate --max-order 3

Gain = win rate of the chosen transfer against scratch (the same readout trained from scratch on the transfer
split), quality = win rate against full supervision (the target's own stage I network), over the test
images; ties count for neither. A target that the policy supervises itself gets gain = win rate of full
against scratch and quality 0.5 (self against self, the original release's convention). Pure NumPy.
A folder of the published results has no losses: `published_scores` reads the release's win rates instead
(gain = wins_vs_pixels, quality = wins_vs_task of the chosen transfer). `best_first_order` picks a target's
best single source on the validation part of the transfer split, so that a score of it on the test images
is not a score of the selection itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from taskonomy import TaskonomyError
from taskonomy.artifacts import TargetLosses
from taskonomy.taxonomy.bip import Problem, Transfer, solve

__all__ = [
    "QUALITY_LEVELS", "Scorer", "SweepPoint", "best_first_order", "policy_scores", "published_scores",
    "supervision_saved", "sweep", "win_rate",
]

QUALITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.45, 0.5)  # average quality asked of a policy; 0.5 = as if all labelled


def win_rate(losses: np.ndarray, other: np.ndarray) -> float:
    """Fraction of test images on which `losses` is strictly lower than `other` (ties count for neither)."""
    return float(np.mean(losses < other)) if len(losses) else math.nan


def best_first_order(losses: TargetLosses, exclude: Collection[str] = ()) -> str:
    """The first-order source of `losses.target` with the lowest mean VALIDATION loss (the readouts' held-out
    transfer scenes, never the test images), as the beam ranks them: the issue's "best first-order source,
    chosen on validation". Every first-order row is eligible, the controls `random` and `pixels` included (a
    control that wins says the target is degenerate); `exclude` leaves sources out (e.g. ("random", "pixels")).
    Ties go to the earlier row. One-line TaskonomyError when no row is eligible or validation losses are missing.
    """
    names = losses.first_order(tuple(exclude))
    if not names:
        raise TaskonomyError(f"target {losses.target} has no first-order transfer to choose from"
                             + (f" (excluded: {', '.join(exclude)})" if exclude else ""))
    means = [losses.validation_mean(n) for n in names]
    return names[int(np.argmin(means))]


def policy_scores(policy: Mapping[str, str], losses: Mapping[str, TargetLosses]) -> dict[str, tuple[float, float]]:
    """(gain, quality) per target of `policy` (target -> transfer name) that has losses; quality NaN without "full"."""
    scores = {}
    for target, name in policy.items():
        if target not in losses:
            continue
        table = losses[target]
        chosen, scratch = table.row(name), table.row("scratch")
        if name == "full":
            scores[target] = (win_rate(chosen, scratch), 0.5)
            continue
        full = table.row("full") if "full" in table.transfers else None
        scores[target] = (win_rate(chosen, scratch), math.nan if full is None else win_rate(chosen, full))
    return scores


Scorer = Callable[[Mapping[str, str]], dict[str, tuple[float, float]]]  # policy -> (gain, quality) per target


def published_scores(policy: Mapping[str, str], wins_vs_pixels: Mapping[str, Mapping[str, float]],
                     wins_vs_task: Mapping[str, Mapping[str, float]],
                     own: Mapping[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """(gain, quality) per target of `policy` from the release's win rates (target -> column -> rate). "full"
    stands for the column in `own` (full, or t for the release's t__t); supervised by full, quality is 0.5."""
    scores = {}
    for target, name in policy.items():
        column = (own or {}).get(target, name) if name == "full" else name
        gains = wins_vs_pixels.get(target, {})
        if column not in gains and column not in wins_vs_task.get(target, {}):
            continue
        quality = 0.5 if column == "full" else wins_vs_task.get(target, {}).get(column, math.nan)
        scores[target] = (gains.get(column, math.nan), quality)
    return scores


@dataclass(frozen=True)
class SweepPoint:
    """One solve of the sweep and its scores; an infeasible point has no policy and no scores."""

    budget: float
    max_order: int
    status: str
    objective: float | None
    supervised: tuple[str, ...]
    label_cost: float
    policy: dict[str, Transfer]
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def mean_gain(self) -> float:
        return _nanmean(g for g, _ in self.scores.values())

    @property
    def mean_quality(self) -> float:
        return _nanmean(q for _, q in self.scores.values())


def _nanmean(values: Iterable[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def sweep(make_problem: Callable[[float, int], Problem], budgets: Sequence[float], orders: Sequence[int],
          losses: Mapping[str, TargetLosses], *, solver: str = "cbc", time_limit: float = 60.0,
          progress: Callable[[SweepPoint], None] | None = None, scorer: Scorer | None = None) -> list[SweepPoint]:
    """Solve the BIP at every (budget, max order) and score each policy on the test losses (or by `scorer`)."""
    score = scorer or (lambda policy: policy_scores(policy, losses))
    points = []
    for order in orders:
        for budget in budgets:
            solution = solve(make_problem(budget, order), solver=solver, time_limit=time_limit)
            policy = solution.policy
            scores = score({t: tr.name for t, tr in policy.items()}) if policy else {}
            point = SweepPoint(budget, order, solution.status, solution.objective, solution.supervised,
                               solution.label_cost, policy, scores)
            points.append(point)
            if progress:
                progress(point)
    return points


def supervision_saved(points: Sequence[SweepPoint], n_targets: int,
                      levels: Sequence[float] = QUALITY_LEVELS) -> list[dict]:
    """Per max order and average-quality level: the least budget whose policy reaches it, against labelling
    every target (which scores 0.5 by convention). `saved` is the share of those labels not needed."""
    rows = []
    for order in sorted({p.max_order for p in points}):
        feasible = sorted((p for p in points if p.max_order == order and p.policy), key=lambda p: p.budget)
        for level in levels:
            hit = next((p for p in feasible if p.mean_quality >= level - 1e-12), None)
            labelled = len(hit.supervised) if hit else None
            rows.append({
                "max_order": order, "quality": level, "budget": hit.budget if hit else None,
                "tasks_labelled": labelled, "label_cost": hit.label_cost if hit else None,
                "mean_quality": round(hit.mean_quality, 6) if hit else None,
                "mean_gain": round(hit.mean_gain, 6) if hit else None, "all_targets": n_targets,
                "saved": round(1 - labelled / n_targets, 6) if hit else None,
            })
    return rows
