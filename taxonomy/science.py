"""The science goals of the default run (issue 15), measured on a finished run folder, one check per goal.

    taskonomy --run-dir runs/default science [--budgets 3,4,5]     # science.csv, science.json

Reads what the stages wrote (stage1_quality.csv, transfers.zarr, affinity.csv, ahp_summary.csv) and the shipped
published 16k affinities, and solves the BIP at a few budgets through taxonomy.stage; it changes nothing but its
two files. A goal that misses is a result, not an error: only a folder that is not a finished run is refused.
Each check is a pure function of what it reads, so a test can hand it a table whose answer it knows.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError
from taskonomy import artifacts
from taskonomy import tasks as registry
from taskonomy.artifacts import BASELINES, SummaryRow, TargetLosses
from taskonomy.config import Config
from taskonomy.runfolder import RunFolder, write_csv, write_json
from taskonomy.taxonomy import evaluate
from taskonomy.taxonomy.bip import Transfer

__all__ = ["THREE_D_TARGETS", "Check", "Goal", "Science", "agreement_goal", "consistency_goal", "controls_goals",
           "degenerate_goal", "first_order", "gain_goal", "line", "measure", "per_target", "run_science",
           "stability_goal", "stage1_goal", "taxonomy_goal"]

THREE_D_TARGETS = ("normal", "reshading", "depth_zbuffer", "depth_euclidean", "curvature", "keypoints3d",
                   "edge_occlusion")  # the 3D targets; their sources must be "3D" tasks (2.5D included)
NO_VALIDATION = "validation losses missing: selection on test"
COLUMNS = ["goal", "target", "value", "threshold", "pass"]


@dataclass(frozen=True)
class Check:
    """One target's (or a network's) measurement against a goal's threshold."""

    target: str
    value: float
    threshold: float
    passed: bool
    note: str = ""


@dataclass(frozen=True)
class Goal:
    """One goal: its overall value against its threshold ("all") and the per-target checks behind it."""

    key: str
    title: str
    rule: str  # how value and threshold compare, in words
    value: float
    threshold: float
    passed: bool
    checks: list[Check] = field(default_factory=list)
    note: str = ""

    @property
    def misses(self) -> list[str]:
        return [c.target for c in self.checks if not c.passed]


def _group(name: str) -> str | None:
    try:
        return registry.get(name).group
    except TaskonomyError:  # a target added from the cache, or an added source: not in the dictionary
        return None


def _all_pass(key: str, title: str, rule: str, checks: list[Check], threshold: float, worst: float,
              note: str = "") -> Goal:
    """A goal that passes when every check does; its value is the worst check's."""
    return Goal(key, title, rule, worst, threshold, bool(checks) and all(c.passed for c in checks), checks,
                note or ("" if checks else "nothing to check"))


def _worst(values: Sequence[float], pick) -> float:
    """The worst of `values` by `pick` (max or min), NaN (a check that measured nothing) left out."""
    return pick((v for v in values if not math.isnan(v)), default=math.nan)


def stage1_goal(rows: Sequence[Mapping[str, str]]) -> Goal:
    """1. Every stage I network beats its trivial baseline (stage1_quality.csv's beats_baseline: ratio below 0.9
    and a per-image win rate above 0.5)."""
    checks = [Check(r["task"], float(r["ratio"]), 0.9, r["beats_baseline"] == "True",
                    f"win rate {float(r['win_rate']):.3f}") for r in rows]
    worst = _worst([c.value for c in checks], max)
    return _all_pass("stage1", "stage I: every network beats its trivial baseline",
                     "ratio to the baseline's loss < threshold and win rate > 0.5", checks, 0.9, worst)


def _mean_test(table: TargetLosses, names: Sequence[str]) -> dict[str, float]:
    return {n: float(table.row(n).mean()) for n in names}


def _first_order_rows(table: TargetLosses, controls: bool = True) -> list[str]:
    return table.first_order(() if controls else registry.control_names())


def _best_source(table: TargetLosses) -> tuple[str, str]:
    """The best first-order source and where it was chosen: on the validation losses (taxonomy.evaluate's
    best_first_order); a run without them (made before the validation split) by mean test loss, and said so."""
    try:
        return evaluate.best_first_order(table), "chosen on validation"
    except TaskonomyError:  # no validation losses in the store, or a first-order row without them
        rows = _first_order_rows(table)
        return rows[int(np.argmin([table.row(n).mean() for n in rows]))], NO_VALIDATION


def gain_goal(losses: Mapping[str, TargetLosses]) -> Goal:
    """2. Gain > 0.5 for every target: per-image test win rate of its best first-order source against scratch."""
    checks, notes = [], set()
    for target, table in losses.items():
        if "scratch" not in table.transfers or not _first_order_rows(table):
            checks.append(Check(target, math.nan, 0.5, False, "no scratch or no first-order row"))
            continue
        best, where = _best_source(table)
        notes.add(where)
        gain = evaluate.win_rate(table.row(best), table.row("scratch"))
        checks.append(Check(target, gain, 0.5, gain > 0.5, f"from {best}"))
    worst = _worst([c.value for c in checks], min)
    return _all_pass("gain", "gain of the best first-order source against scratch > 0.5 for every target",
                     "test win rate > threshold", checks, 0.5, worst, "; ".join(sorted(notes)))


def consistency_goal(summary: Sequence[SummaryRow], limit: float = 0.5) -> Goal:
    """3. AHP's consistency ratio below `limit` for every target (ahp_summary.csv)."""
    checks = [Check(r.target, r.consistency_ratio, limit, r.consistency_ratio < limit) for r in summary]
    worst = _worst([c.value for c in checks], max)
    return _all_pass("consistency", "AHP consistency ratio < 0.5 for every target", "value < threshold", checks,
                     limit, worst)


def degenerate_goal(losses: Mapping[str, TargetLosses], share: float = 0.05) -> Goal:
    """4. No degenerate target: with the controls left out, the median first-order source's mean test loss lies
    more than `share` of the full network's mean test loss above the best one's."""
    checks = []
    for target, table in losses.items():
        means = _mean_test(table, _first_order_rows(table, controls=False))
        if len(means) < 2 or "full" not in table.transfers:
            checks.append(Check(target, math.nan, share, False, "fewer than 2 sources or no full row"))
            continue
        full = float(table.row("full").mean())
        best, median = min(means.values()), float(np.median(list(means.values())))
        spread = (median - best) / full if full > 0 else math.nan
        checks.append(Check(target, spread, share, spread > share,
                            f"best {best:.4g}, median {median:.4g}, full {full:.4g}"))
    worst = _worst([c.value for c in checks], min)
    return _all_pass("degenerate", "no degenerate target: (median - best) first-order mean test loss > 5% of full's",
                     "(median - best) / full > threshold", checks, share, worst)


def stability_goal(summary: Sequence[SummaryRow], share: float = 0.6) -> Goal:
    """5. The top source stays on top in at least `share` of the bootstrap resamples (ahp_summary.csv)."""
    checks = [Check(r.target, r.top_source_stability, share, r.top_source_stability >= share,
                    f"top {r.top_source}" if not math.isnan(r.top_source_stability) else "no bootstrap")
              for r in summary]
    worst = _worst([c.value for c in checks], min)
    return _all_pass("stability", "the top source stays on top in >= 60% of bootstrap resamples",
                     "value >= threshold", checks, share, worst)


def first_order(table: artifacts.AffinityTable) -> dict[str, dict[str, float]]:
    """Per target its single-source affinities (full and scratch left out), from affinity.csv."""
    return {t: {c: v for c, v in table.row(t).items() if c not in BASELINES and "+" not in c} for t in table.targets}


def _rank(row: Mapping[str, float], source: str) -> int:
    """1 for the highest affinity; ties give the source the better rank."""
    return 1 + sum(v > row[source] for v in row.values())


def controls_goals(rows: Mapping[str, Mapping[str, float]]) -> list[Goal]:
    """6. random in the bottom quarter of the first-order sources (by affinity) for ceil(15/18 of the) targets;
    pixels in the bottom half for every target but the low-level ones."""
    quarter, half = [], []
    for target, row in rows.items():
        n = len(row)
        if "random" in row:
            need = math.floor(0.75 * n) + 1  # the first rank of the bottom quarter
            rank = _rank(row, "random")
            quarter.append(Check(target, rank, need, rank >= need, f"of {n}, needs >= {need}"))
        if "pixels" in row and _group(target) != "low-level":
            need = math.floor(0.5 * n) + 1
            rank = _rank(row, "pixels")
            half.append(Check(target, rank, need, rank >= need, f"of {n}, needs >= {need}"))
    wanted = -(-15 * len(quarter) // 18)  # ceil(15/18 n) in integers: "15 of 18" scaled to the run's targets
    hits = sum(c.passed for c in quarter)
    random = Goal("random", "random in the bottom quarter of the first-order sources for 15 of 18 targets (scaled)",
                  "targets where its rank >= the bottom quarter's first, at least threshold", hits, wanted,
                  bool(quarter) and hits >= wanted, quarter, "" if quarter else "random was not tried")
    pixels = _all_pass("pixels", "pixels in the bottom half of the first-order sources but for low-level targets",
                       "rank >= the bottom half's first, every non-low-level target", half,
                       len(half), sum(c.passed for c in half))
    return [random, pixels]


def agreement_goal(rows: Sequence[Any], mean_at_least: float = 0.5) -> Goal:
    """7. Agreement with the published 16k affinities (taxonomy.compare.agreement's rows): mean per-target Spearman
    at least `mean_at_least` and no target below 0."""
    from taskonomy.taxonomy.compare import mean_spearman

    checks = [Check(r.target, r.spearman, 0.0, r.spearman >= 0,
                    f"{r.sources} sources" + (", too few to rank" if math.isnan(r.spearman) else ""))
              for r in rows]
    mean = mean_spearman(list(rows))
    return Goal("published", "agreement with the published 16k: mean Spearman >= 0.5, no target below 0",
                "mean >= threshold and every target >= 0", mean, mean_at_least,
                bool(checks) and mean >= mean_at_least and all(c.passed for c in checks), checks)


def _allowed(target: str, sources: Sequence[str]) -> bool | None:
    """Whether a transfer's sources suit its target (None: the target is neither 3D nor semantic)."""
    if target in THREE_D_TARGETS:
        families = {"3D"}
    elif _group(target) == "semantic":
        families = {"semantic", "3D"}
    else:
        return None
    return all(s == target or _group(s) in families for s in sources)


def taxonomy_goal(budget: float, status: str, policy: Mapping[str, Transfer]) -> Goal:
    """8. At `budget`: every chosen transfer into a 3D target reads 3D tasks or the target itself; into a semantic
    target, semantic or 3D tasks."""
    checks = []
    for target, transfer in policy.items():
        ok = _allowed(target, transfer.sources)
        if ok is not None:
            checks.append(Check(target, float(ok), 1.0, ok, f"<- {transfer.name}"))
    title = f"taxonomy at budget {budget:g}: 3D targets from 3D sources, semantic from semantic or 3D"
    if not policy:
        return Goal(f"taxonomy_b{budget:g}", title, "every checked target", math.nan, 1.0, False, [],
                    f"the BIP is {status}")
    return _all_pass(f"taxonomy_b{budget:g}", title, "share of 3D and semantic targets whose sources suit them",
                     checks, 1.0, sum(c.passed for c in checks) / len(checks) if checks else math.nan)


@dataclass(frozen=True)
class Science:
    """Every goal measured on one run, and the run's stage timings when `taskonomy run` wrote them."""

    run_dir: Path
    goals: list[Goal]
    budgets: list[float]
    max_order: int
    timings: dict[str, float] | None

    def summary(self) -> dict[str, Any]:
        """science.json: every goal with its checks; NaN as null."""
        goals = [{**{k: _json(v) for k, v in asdict(g).items() if k != "checks"}, "misses": g.misses,
                  "checks": [{k: _json(v) for k, v in asdict(c).items()} for c in g.checks]} for g in self.goals]
        return {"run": str(self.run_dir), "goals_passed": sum(g.passed for g in self.goals),
                "goals": goals, "budgets": self.budgets, "max_order": self.max_order, "timings": self.timings}


def _json(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _stage1_rows(run: RunFolder) -> list[dict[str, str]]:
    path = run.stage1_quality
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise TaskonomyError(f"{path} does not exist; the science checks need a finished run: run `taskonomy "
                             f"train` (or `taskonomy run`)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TaskonomyError(f"cannot read {path}: {err}") from None
    needed = {"task", "ratio", "win_rate", "beats_baseline"}
    if not rows or not needed <= set(rows[0]):
        raise TaskonomyError(f"{path}: expected rows with the columns {', '.join(sorted(needed))}")
    try:
        for row in rows:
            float(row["ratio"]), float(row["win_rate"])
    except (TypeError, ValueError):
        raise TaskonomyError(f"{path}: ratio and win_rate must be numbers (task {row['task']})") from None
    return rows


def _timings(run: RunFolder) -> dict[str, float] | None:
    try:
        return {k: float(v) for k, v in json.loads(run.run_timings.read_text())["seconds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _taxonomy_goals(config: Config, run_dir: Path, budgets: Sequence[float]) -> tuple[list[Goal], int]:
    """Goal 8 at each budget, max order the run's highest, solved as `taskonomy solve` builds the BIP."""
    from taskonomy.taxonomy.bip import solve
    from taskonomy.taxonomy.stage import make_problem, read_affinity

    affinity = read_affinity(run_dir)
    top = max(tr.order for tr in affinity.transfers)
    cfg = config.taxonomy
    goals = []
    for budget in budgets:
        solution = solve(make_problem(affinity, cfg, budget, top), solver=cfg.solver, time_limit=cfg.time_limit)
        goals.append(taxonomy_goal(budget, solution.status, solution.policy))
    return goals, top


def measure(config: Config, run_dir: str | Path, budgets: Sequence[float] = (3, 4, 5)) -> Science:
    """Every goal on a finished run folder; a folder that is not one is a one-line TaskonomyError."""
    from taskonomy.taxonomy.compare import agreement, open_side

    run = RunFolder(run_dir)
    if artifacts.read_published(run.path) is not None:
        raise TaskonomyError(f"{run.path} holds the published Taskonomy results; the science checks measure a "
                             f"run's own networks and losses")
    stage1 = _stage1_rows(run)
    summary = artifacts.read_summary(run.path)
    rows = first_order(artifacts.read_affinity(run.path))
    losses = artifacts.read_losses(run.path, purpose="the science checks").targets
    if not losses:
        raise TaskonomyError(f"no target of {run.transfers} is complete; run `taskonomy transfer` first")
    published = agreement(open_side(str(run.path)), open_side("published:16k"))
    taxonomies, top = _taxonomy_goals(config, run.path, budgets)
    goals = [stage1_goal(stage1), gain_goal(losses), consistency_goal(summary), degenerate_goal(losses),
             stability_goal(summary), *controls_goals(rows), agreement_goal(published), *taxonomies]
    return Science(run.path, goals, [float(b) for b in budgets], top, _timings(run))


def run_science(config: Config, run_dir: str | Path, budgets: Sequence[float] = (3, 4, 5)) -> tuple[Science,
                                                                                                     list[Path]]:
    """Measure every goal; write science.csv (goal, target or "all", value, threshold, pass) and science.json."""
    science = measure(config, run_dir, budgets)
    rows = []
    for goal in science.goals:
        rows.append([goal.key, "all", goal.value, goal.threshold, goal.passed])
        rows.extend([goal.key, c.target, c.value, c.threshold, c.passed] for c in goal.checks)
    run = RunFolder(run_dir)
    return science, [write_csv(run.science_csv, COLUMNS, rows, digits=6),
                     write_json(run.science_json, science.summary())]


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def line(goal: Goal) -> str:
    """One printed line: PASS or MISS, the goal, its value against its threshold, and the checks that miss."""
    misses = ", ".join(f"{c.target} {_number(c.value)}" + (f" ({c.note})" if c.note else "")
                       for c in goal.checks if not c.passed)
    note = f"; {goal.note}" if goal.note else ""
    return (f"{'PASS' if goal.passed else 'MISS'}  {goal.key:<12} {_number(goal.value):>6} (threshold "
            f"{goal.threshold:g}: {goal.rule})  {goal.title}{note}" + (f"; misses: {misses}" if misses else ""))


def per_target(goal: Goal) -> str:
    """Every check's target and value on one line (the agreement goal prints every target's Spearman)."""
    return ", ".join(f"{c.target} {_number(c.value)}" for c in goal.checks)
