"""Stage IV as the CLI runs it: reads affinity.csv and transfers.zarr, writes the taxonomy and its evaluation.

    taskonomy --config configs/tiny.yaml solve --budget 3 --max-order 2     # taxonomy.json, taxonomy_graph.png
    taskonomy --config configs/tiny.yaml evaluate                           # evaluation.csv, curves, saved labels,
                                                                            # taxonomy_budget_<b>.png for the report
    taskonomy --config configs/tiny.yaml all-for-one NEW --supervised a,b   # all_for_one_NEW.json / .png

The only module of taxonomy/ that touches files; every output is written to a temporary name and renamed.
By default the controls (random, pixels) and scratch are not part of the BIP: list a control in
taxonomy.sources to let it be chosen (it costs 0 labels unless taxonomy.cost says otherwise).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from taskonomy import TaskonomyError
from taskonomy import artifacts
from taskonomy import tasks as registry
from taskonomy.artifacts import TargetLosses
from taskonomy.config import Config, TaxonomyConfig, _one_line
from taskonomy.runfolder import RunFolder, save_figure, write_csv, write_json
from taskonomy.taxonomy.bip import Problem, Solution, Transfer, all_for_one, explain_infeasible, solve
from taskonomy.taxonomy.evaluate import (QUALITY_LEVELS, Scorer, SweepPoint, policy_scores, published_scores,
                                         supervision_saved, sweep)

__all__ = ["Affinity", "hyperedges", "make_problem", "published_scorer", "read_affinity", "read_losses",
           "report_budgets", "run_all_for_one", "run_evaluate", "run_solve", "solve_policy", "sweep_policies",
           "with_overrides"]

@dataclass(frozen=True)
class Affinity:
    """affinity.csv: the targets (rows), every tried transfer but scratch, and every task seen as a source."""

    path: Path
    targets: list[str]
    transfers: list[Transfer]
    sources: list[str]
    # target -> the column its hyperedge ({t}, t) stands for: "full", or in a published folder t itself (the
    # release's t__t, a readout on t's own encoder) where that scored higher; both need t's labels
    own: dict[str, str] = field(default_factory=dict)

    def column(self, transfer: Transfer) -> str:
        """The affinity column `transfer` stands for: its name, or for ({t}, t) the column in `own`."""
        return self.own.get(transfer.target, "full") if transfer.name == "full" else transfer.name


def _registry_order(names: set[str]) -> list[str]:
    known = [t.name for t in registry.all_tasks() if t.name in names]
    return known + sorted(names - set(known))


def hyperedges(rows: Mapping[str, Mapping[str, float]]) -> dict[tuple[tuple[str, ...], str], tuple[float, str]]:
    """The BIP's hyperedges of affinity rows (target -> column -> affinity): (sources, target) -> (affinity, the
    column it came from), every column but scratch. `full` is the target supervising itself; in a published folder
    the release's t__t (column t) is the same hyperedge ({t}, t), which takes the better of the two: both need t's
    labels."""
    best: dict[tuple[tuple[str, ...], str], tuple[float, str]] = {}
    for target, row in rows.items():
        for column, value in row.items():
            if column == "scratch":
                continue
            edge = ((target,) if column in ("full", target) else tuple(column.split("+")), target)
            if edge not in best or value > best[edge][0]:
                best[edge] = (value, column)
    return best


def read_affinity(run_dir: Path) -> Affinity:
    """affinity.csv (taskonomy.artifacts reads and checks it) as the BIP's hyperedges: every tried transfer but
    scratch, `full` as the target supervising itself."""
    table = artifacts.read_affinity(run_dir)
    best = hyperedges({target: table.row(target) for target in table.targets})
    transfers = [Transfer(sources, target, value) for (sources, target), (value, _) in best.items()]
    own = {target: column for (sources, target), (_, column) in best.items() if sources == (target,)}
    sources = {s for c in table.transfers if c not in artifacts.BASELINES for s in c.split("+")}
    # a target with a `full` transfer was supervised in stage I: a source too, even when nothing else reads it
    # (a dictionary of one task has no other column naming it)
    sources |= {tr.target for tr in transfers if tr.sources == (tr.target,) and _may_be_supervised(tr.target)}
    return Affinity(table.path, list(table.targets), transfers, _registry_order(sources), own)


def _may_be_supervised(name: str) -> bool:
    try:
        return registry.get(name).is_source
    except TaskonomyError:  # not in the dictionary: a target added from the cache, never supervised
        return False


def published_scorer(run_dir: Path, affinity: Affinity) -> Scorer | None:
    """In a folder of the published results: score policies by the release's win rates (None elsewhere)."""
    if artifacts.read_published(run_dir) is None:
        return None
    pixels, task = (artifacts.read_win_rates(run_dir, kind) for kind in ("wins_vs_pixels", "wins_vs_task"))
    rows = {kind: {t: table.row(t) for t in table.targets} for kind, table in (("pixels", pixels), ("task", task))}
    return lambda policy: published_scores(policy, rows["pixels"], rows["task"], affinity.own)


def read_losses(run_dir: Path, targets: Sequence[str]) -> dict[str, TargetLosses]:
    """Per-image test losses of `targets` from transfers.zarr; a target not complete there is left out (warning)."""
    return artifacts.read_losses(run_dir, targets, purpose="the evaluation").targets


def with_overrides(config: Config, **overrides: Any) -> Config:
    """`config` with command-line values for its taxonomy section (None = keep), validated like the YAML."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if not values:
        return config
    section = config.taxonomy.model_dump()
    for key in ("importance", "cost"):  # per-task weights add to the config's rather than replace them
        values[key] = {**section[key], **values.get(key, {})}
    try:
        return Config.model_validate({**config.model_dump(), "taxonomy": {**section, **values}})
    except ValidationError as err:
        raise TaskonomyError(_one_line(err, "command line")) from None


def make_problem(affinity: Affinity, cfg: TaxonomyConfig, budget: float, max_order: int) -> Problem:
    """The BIP instance for the configured sources, targets, importance and cost, up to `max_order`."""
    controls = set(registry.control_names())
    if cfg.sources == "all":
        sources = [s for s in affinity.sources if s not in controls]
    else:
        sources = list(cfg.sources)
        _check_known(sources, affinity.sources, "taxonomy.sources", affinity.path, "a source")
    if cfg.targets == "all":
        targets = list(affinity.targets)
    else:
        targets = list(cfg.targets)
        _check_known(targets, affinity.targets, "taxonomy.targets", affinity.path, "a target")
    _check_known(list(cfg.importance), affinity.targets, "taxonomy.importance", affinity.path, "a target")
    _check_known(list(cfg.cost), affinity.sources, "taxonomy.cost", affinity.path, "a source")
    cost = {c: 0.0 for c in controls if c in sources} | dict(cfg.cost)  # controls need no labels
    transfers = tuple(tr for tr in affinity.transfers if tr.order <= max_order)
    return Problem(tuple(sources), tuple(targets), transfers, budget, dict(cfg.importance), cost)


def _check_known(names: list[str], known: list[str], key: str, path: Path, what: str) -> None:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskonomyError(f"{key} names {unknown[0]!r}, which is not {what} in {path}")


def _solve_checked(problem: Problem, cfg: TaxonomyConfig) -> Solution:
    solution = solve(problem, solver=cfg.solver, time_limit=cfg.time_limit)
    if solution.status == "infeasible":
        raise TaskonomyError(f"infeasible: {explain_infeasible(problem, cfg.solver, cfg.time_limit)}")
    if solution.status == "unsolved":
        raise TaskonomyError(f"no policy found within the time limit of {cfg.time_limit:g} s; "
                             f"raise taxonomy.time_limit")
    return solution


def solve_policy(config: Config, run_dir: Path, affinity: Affinity | None = None) -> tuple[Problem, Solution]:
    """The configured BIP over the run's affinities (`affinity`, when the caller read them already) and its optimal
    policy (infeasible: a one-line error)."""
    cfg = config.taxonomy
    problem = make_problem(affinity or read_affinity(run_dir), cfg, cfg.budget, cfg.max_order)
    return problem, _solve_checked(problem, cfg)


def sweep_policies(config: Config, run_dir: Path, max_order: int | None = None,
                   budgets: Sequence[float] | None = None,
                   progress: Callable[[SweepPoint], None] | None = None) -> tuple[list[SweepPoint], Problem, dict]:
    """Solve at every budget (default 1..number of sources) and max order 1..K and score each policy on the test
    losses: (points, the problem at budget 0 naming sources and targets, the losses read)."""
    cfg = config.taxonomy
    top = max_order or cfg.max_order
    affinity = read_affinity(run_dir)
    probe = make_problem(affinity, cfg, 0.0, top)
    scorer = published_scorer(run_dir, affinity)  # a published folder: the release's win rates, no losses
    losses = {} if scorer else read_losses(run_dir, probe.targets)
    if not losses and not scorer:
        raise TaskonomyError(f"no target of {RunFolder(run_dir).transfers} is complete; nothing to evaluate")
    budgets = [float(b) for b in (budgets or range(1, len(probe.sources) + 1))]
    points = sweep(lambda b, k: make_problem(affinity, cfg, b, k), budgets, list(range(1, top + 1)), losses,
                   solver=cfg.solver, time_limit=cfg.time_limit, progress=progress, scorer=scorer)
    if not any(p.policy for p in points):
        problem = make_problem(affinity, cfg, budgets[-1], top)
        raise TaskonomyError(f"infeasible at every budget up to {budgets[-1]:g}: "
                             f"{explain_infeasible(problem, cfg.solver, cfg.time_limit)}")
    return points, probe, losses


def _policy_doc(problem: Problem, policy: dict[str, Transfer], affinity: Affinity) -> dict[str, Any]:
    """Per target its transfer; `column` names the affinity column (in a published folder, ({t}, t) may be the
    release's t__t, column t, rather than full)."""
    return {t: {"transfer": tr.name, "column": affinity.column(tr),
                "sources": list(tr.sources), "order": tr.order, "affinity": tr.affinity,
                "importance": problem.importance_of(t)} for t, tr in policy.items()}


def run_solve(config: Config, run_dir: Path) -> tuple[Solution, list[Path]]:
    """Solve the configured BIP; write taxonomy.json and taxonomy_graph.png."""
    from taskonomy.taxonomy.graph import taxonomy_figure

    cfg = config.taxonomy
    affinity = read_affinity(run_dir)
    problem, solution = solve_policy(config, run_dir, affinity)
    doc = {"budget": cfg.budget, "max_order": cfg.max_order, "solver": cfg.solver, "status": solution.status,
           "objective": solution.objective, "label_cost": solution.label_cost,
           "supervised": list(solution.supervised), "policy": _policy_doc(problem, solution.policy, affinity),
           "sources": list(problem.sources), "targets": list(problem.targets), "seconds": round(solution.seconds, 4)}
    title = (f"Taxonomy: budget {cfg.budget:g}, max order {cfg.max_order}, {len(solution.supervised)} supervised, "
             f"objective {solution.objective:.3f} ({solution.status})")
    figure = taxonomy_figure(solution.supervised, solution.policy, title)
    return solution, [write_json(RunFolder(run_dir).taxonomy, doc),
                      save_figure(RunFolder(run_dir).taxonomy_graph, figure)]


def run_evaluate(config: Config, run_dir: Path, *, max_order: int | None = None,
                 levels: Sequence[float] = QUALITY_LEVELS,
                 progress: Callable[[SweepPoint], None] | None = None) -> tuple[list[SweepPoint], list[Path]]:
    """Sweep budgets 1..number of sources and max orders 1..K; write the table, curves, supervision saved and
    the taxonomies at report_budgets() for the report (budget_taxonomies.json lists them)."""
    from taskonomy.taxonomy.graph import evaluation_figure, taxonomy_grid_figure

    top = max_order or config.taxonomy.max_order
    points, probe, losses = sweep_policies(config, run_dir, top, progress=progress)
    budgets = sorted({p.budget for p in points})
    orders = list(range(1, top + 1))
    rows = [[p.budget, p.max_order, t, tr.name, *p.scores.get(t, (math.nan, math.nan))]
            for p in points for t, tr in p.policy.items()]
    scored = {t for p in points for t in p.scores}
    evaluated = [t for t in probe.targets if t in losses or t in scored]
    saved = supervision_saved(points, len(probe.targets), levels)
    summary = [{"budget": p.budget, "max_order": p.max_order, "status": p.status, "objective": p.objective,
                "label_cost": p.label_cost, "supervised": list(p.supervised),
                "mean_gain": _json_float(p.mean_gain), "mean_quality": _json_float(p.mean_quality)} for p in points]
    feasible = [b for b in budgets if any(p.policy for p in points if p.budget == b)]
    shown = sorted({feasible[round(i * (len(feasible) - 1) / 3)] for i in range(4)}) if feasible else []
    run = RunFolder(run_dir)
    return points, [
        write_csv(run.evaluation, ["budget", "max_order", "target", "transfer", "gain", "quality"], rows, digits=6),
        write_csv(run.supervision_saved_csv, list(saved[0]), [list(r.values()) for r in saved], digits=6),
        write_json(run.supervision_saved_json, {
            "all_targets": len(probe.targets), "evaluated_targets": evaluated,
            "note": "quality is the win rate against full supervision; labelling every target scores 0.5",
            "levels": saved, "points": summary}),
        save_figure(run.evaluation_curves, evaluation_figure(points, evaluated)),
        save_figure(run.evaluation_taxonomies, taxonomy_grid_figure(points, shown, orders[-4:])),
        *_draw_budget_taxonomies(run, points, report_budgets(len(probe.sources)), top),
    ]


def report_budgets(n_sources: int) -> list[int]:
    """Budgets at which `evaluate` draws the taxonomy for the report: 1, 3 and 5 where there are that many
    sources."""
    return [b for b in (1, 3, 5) if b <= n_sources]


def _draw_budget_taxonomies(run: RunFolder, points: Sequence[SweepPoint], budgets: Sequence[int],
                            order: int) -> list[Path]:
    """The swept taxonomy of max order `order` at each of `budgets` as a PNG, targets coloured by quality, and
    budget_taxonomies.json listing them (file null where the BIP has no policy at that budget)."""
    from taskonomy.taxonomy.graph import taxonomy_figure

    by_budget = {p.budget: p for p in points if p.max_order == order}
    paths, entries = [], []
    for budget in budgets:
        point = by_budget[float(budget)]
        entry = {"budget": budget, "max_order": order, "status": point.status, "objective": point.objective,
                 "supervised": list(point.supervised), "scored": bool(point.scores), "file": None}
        if point.policy:
            title = (f"Budget {budget}, max order {order}: supervise {', '.join(point.supervised)}; "
                     f"objective {point.objective:.3f} ({point.status})")
            figure = taxonomy_figure(point.supervised, point.policy, title, point.scores or None)
            paths.append(save_figure(run.budget_taxonomy(budget), figure))
            entry["file"] = paths[-1].name
        entries.append(entry)
    return [*paths, write_json(run.budget_taxonomies, {"max_order": order, "taxonomies": entries})]


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)


def run_all_for_one(config: Config, run_dir: Path, target: str, supervised: Sequence[str] | None,
                    max_order: int | None = None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Figure 10: the best transfer into `target` from the supervised sources, for max orders 1..K."""
    from taskonomy.taxonomy.graph import taxonomy_figure

    affinity = read_affinity(run_dir)
    if target not in affinity.targets:
        raise TaskonomyError(f"{target!r} is not a target in {affinity.path}; add it (stage II) and compute its "
                             f"affinities (stage III) first")
    if supervised is None:
        supervised = _supervised_from_taxonomy(run_dir)
    _check_known([s for s in supervised if s != target], affinity.sources, "--supervised", affinity.path, "a source")
    losses: dict[str, TargetLosses] = {}
    scorer = published_scorer(run_dir, affinity)
    if scorer is None and (RunFolder(run_dir).transfers).exists():
        losses = read_losses(run_dir, [target])
    score = scorer or (lambda policy: policy_scores(policy, losses))
    top = max_order or config.taxonomy.max_order
    rows, best = [], None
    for order in range(1, top + 1):
        best = all_for_one(affinity.transfers, target, supervised, order)
        gain, quality = score({target: best.name}).get(target, (math.nan,) * 2) if best else (
            math.nan, math.nan)
        rows.append({"max_order": order, "transfer": best.name if best else None,
                     "column": affinity.column(best) if best else None,
                     "sources": list(best.sources) if best else [], "affinity": best.affinity if best else None,
                     "gain": _json_float(gain), "quality": _json_float(quality)})
    if best is None:
        raise TaskonomyError(f"no transfer into {target} reads only the supervised sources {', '.join(supervised)}")
    doc = {"target": target, "supervised": list(supervised), "max_order": top, "best": rows[-1], "orders": rows}
    title = (f"All-for-one: {target} <- {best.name}, the best among {len(supervised)} supervised sources "
             f"(max order {top})")
    used = [s for s in supervised if s in best.sources]
    figure = taxonomy_figure(used, {target: best}, title, score({target: best.name}))
    return rows, [write_json(RunFolder(run_dir).all_for_one(target, "json"), doc),
                  save_figure(RunFolder(run_dir).all_for_one(target, "png"), figure)]


def _supervised_from_taxonomy(run_dir: Path) -> list[str]:
    path = RunFolder(run_dir).taxonomy
    try:
        return list(json.loads(path.read_text())["supervised"])
    except FileNotFoundError:
        raise TaskonomyError(f"pass --supervised, or run `taskonomy solve` first to write {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TaskonomyError(f"cannot read the supervised sources from {path}: {err}") from None
