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

import csv
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.config import Config, TaxonomyConfig, _one_line
from taskonomy.runfolder import RunFolder, save_figure, write_json
from taskonomy.taxonomy.bip import Problem, Solution, Transfer, all_for_one, explain_infeasible, solve
from taskonomy.taxonomy.evaluate import (QUALITY_LEVELS, SweepPoint, TargetLosses, policy_scores,
                                         supervision_saved, sweep)

__all__ = ["Affinity", "make_problem", "read_affinity", "read_losses", "report_budgets", "run_all_for_one",
           "run_evaluate", "run_solve", "with_overrides"]

AFFINITY_FILE = "affinity.csv"
TRANSFERS_STORE = "transfers.zarr"
_BASELINES = ("full", "scratch")
_ROW_SUM_TOLERANCE = 1e-3  # AHP rows sum to 1; the CSV's rounding may leave a little


def _controls() -> set[str]:
    return {t.name for t in registry.all_tasks() if t.group == "control"}


def _canonical(name: str, where: str) -> str:
    """A transfer's canonical name: "full", "scratch", or valid task names sorted and joined by "+"."""
    name = name.strip()
    if name in _BASELINES:
        return name
    parts = name.split("+")
    try:
        [registry.validate_name(p) for p in parts]
    except TaskonomyError as err:
        raise TaskonomyError(f"{where}: transfer {name!r}: {err}") from None
    if len(set(parts)) != len(parts):
        raise TaskonomyError(f"{where}: transfer {name!r} names a source twice")
    return "+".join(sorted(parts))


@dataclass(frozen=True)
class Affinity:
    """affinity.csv: the targets (rows), every tried transfer but scratch, and every task seen as a source."""

    path: Path
    targets: list[str]
    transfers: list[Transfer]
    sources: list[str]


def _registry_order(names: set[str]) -> list[str]:
    known = [t.name for t in registry.all_tasks() if t.name in names]
    return known + sorted(names - set(known))


def read_affinity(run_dir: Path) -> Affinity:
    """Parse and check <run_dir>/affinity.csv (target, then one column per transfer; empty = not tried)."""
    path = run_dir / AFFINITY_FILE
    try:
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise TaskonomyError(f"{path} does not exist; compute the affinities (stage III) first") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TaskonomyError(f"cannot read {path}: {err}") from None
    if not rows or not rows[0] or rows[0][0].strip() != "target":
        raise TaskonomyError(f"{path}: expected a header whose first column is 'target'")
    columns = [_canonical(c, str(path)) for c in rows[0][1:]]
    if len(set(columns)) != len(columns):
        raise TaskonomyError(f"{path}: a transfer column appears twice")
    targets: list[str] = []
    transfers: list[Transfer] = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path} line {line}"
        if len(row) != len(rows[0]):
            raise TaskonomyError(f"{where}: expected {len(rows[0])} cells, got {len(row)}")
        target = row[0].strip()
        try:
            registry.validate_name(target)
        except TaskonomyError as err:
            raise TaskonomyError(f"{where}: {err}") from None
        if target in targets:
            raise TaskonomyError(f"{where}: target {target} has a second row")
        targets.append(target)
        transfers += _parse_row(target, columns, row[1:], where)
    if not targets:
        raise TaskonomyError(f"{path}: no target rows")
    sources = {s for c in columns if c not in _BASELINES for s in c.split("+")}
    # a target with a `full` transfer was supervised in stage I: a source too, even when nothing else reads it
    # (a dictionary of one task has no other column naming it)
    sources |= {tr.target for tr in transfers if tr.sources == (tr.target,) and _may_be_supervised(tr.target)}
    return Affinity(path, targets, transfers, _registry_order(sources))


def _may_be_supervised(name: str) -> bool:
    try:
        return registry.get(name).is_source
    except TaskonomyError:  # not in the dictionary: a target added from the cache, never supervised
        return False


def _parse_row(target: str, columns: list[str], cells: list[str], where: str) -> list[Transfer]:
    values = []
    for column, cell in zip(columns, cells):
        try:
            value = float(cell) if cell.strip() else math.nan
        except ValueError:
            raise TaskonomyError(f"{where}, column {column}: expected a number or nothing, got {cell!r}") from None
        if not (math.isnan(value) or 0 <= value <= 1):
            raise TaskonomyError(f"{where}, column {column}: an affinity lies in [0, 1], got {cell.strip()}")
        values.append(value)
    total = float(np.nansum(values))
    if abs(total - 1) > _ROW_SUM_TOLERANCE:
        raise TaskonomyError(f"{where}: the affinities of target {target} sum to {total:.4f}, expected 1")
    row = []
    for column, value in zip(columns, values):
        if math.isnan(value) or column == "scratch":
            continue
        sources = (target,) if column == "full" else tuple(column.split("+"))
        if column != "full" and target in sources:
            raise TaskonomyError(f"{where}: transfer {column} into {target} reads the target itself; use 'full'")
        row.append(Transfer(sources, target, value))
    return row


def read_losses(run_dir: Path, targets: Sequence[str]) -> dict[str, TargetLosses]:
    """Per-image test losses of `targets` from transfers.zarr; a target not complete there is left out (warning)."""
    import zarr

    path = run_dir / TRANSFERS_STORE
    if not path.exists():
        raise TaskonomyError(f"{path} does not exist; run the transfers (stage II) first")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as err:  # a garbled zarr.json is as bad as a missing one
        raise TaskonomyError(f"{path} is not a readable Zarr store ({type(err).__name__})") from None
    out: dict[str, TargetLosses] = {}
    for target in targets:
        group = root.get(target)
        if group is None or not group.attrs.get("complete", False):
            state = "is missing from" if group is None else "is incomplete in"
            warnings.warn(f"target {target} {state} {path}; it is left out of the evaluation", TaskonomyWarning,
                          stacklevel=2)
            continue
        where = f"{path}/{target}"
        names = [_canonical(str(n), where) for n in group.attrs.get("transfers", [])]
        try:
            losses = np.asarray(group["losses"][...], dtype=np.float64)
        except KeyError:
            raise TaskonomyError(f"{where}: no 'losses' array") from None
        if losses.ndim != 2 or losses.shape[0] != len(names):
            raise TaskonomyError(f"{where}: losses of shape {losses.shape} do not match its {len(names)} transfers")
        if not np.isfinite(losses).all():
            raise TaskonomyError(f"{where}: losses are not all finite")
        out[target] = TargetLosses(names, losses)
    if len({t.losses.shape[1] for t in out.values()}) > 1:
        raise TaskonomyError(f"{path}: targets were tested on different numbers of images")
    return out


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
    controls = _controls()
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


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise TaskonomyError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _write_json(path: Path, doc: Any) -> Path:
    return _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(doc, indent=2) + "\n"))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(header)
            out.writerows([[_cell(v) for v in row] for row in rows])
    return _write_atomic(path, write)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value


def _policy_doc(problem: Problem, policy: dict[str, Transfer]) -> dict[str, Any]:
    return {t: {"transfer": tr.name, "sources": list(tr.sources), "order": tr.order, "affinity": tr.affinity,
                "importance": problem.importance_of(t)} for t, tr in policy.items()}


def run_solve(config: Config, run_dir: Path) -> tuple[Solution, list[Path]]:
    """Solve the configured BIP; write taxonomy.json and taxonomy_graph.png."""
    from taskonomy.taxonomy.graph import taxonomy_figure

    cfg = config.taxonomy
    affinity = read_affinity(run_dir)
    problem = make_problem(affinity, cfg, cfg.budget, cfg.max_order)
    solution = _solve_checked(problem, cfg)
    doc = {"budget": cfg.budget, "max_order": cfg.max_order, "solver": cfg.solver, "status": solution.status,
           "objective": solution.objective, "label_cost": solution.label_cost,
           "supervised": list(solution.supervised), "policy": _policy_doc(problem, solution.policy),
           "sources": list(problem.sources), "targets": list(problem.targets), "seconds": round(solution.seconds, 4)}
    title = (f"Taxonomy: budget {cfg.budget:g}, max order {cfg.max_order}, {len(solution.supervised)} supervised, "
             f"objective {solution.objective:.3f} ({solution.status})")
    figure = taxonomy_figure(solution.supervised, solution.policy, title)
    return solution, [_write_json(run_dir / "taxonomy.json", doc),
                      save_figure(RunFolder(run_dir).taxonomy_graph, figure)]


def run_evaluate(config: Config, run_dir: Path, *, max_order: int | None = None,
                 levels: Sequence[float] = QUALITY_LEVELS,
                 progress: Callable[[SweepPoint], None] | None = None) -> tuple[list[SweepPoint], list[Path]]:
    """Sweep budgets 1..number of sources and max orders 1..K; write the table, curves, supervision saved and
    the taxonomies at report_budgets() for the report (budget_taxonomies.json lists them)."""
    from taskonomy.taxonomy.graph import evaluation_figure, taxonomy_grid_figure

    cfg = config.taxonomy
    top = max_order or cfg.max_order
    affinity = read_affinity(run_dir)
    probe = make_problem(affinity, cfg, 0.0, top)
    losses = read_losses(run_dir, probe.targets)
    if not losses:
        raise TaskonomyError(f"no target of {run_dir / TRANSFERS_STORE} is complete; nothing to evaluate")
    budgets = [float(b) for b in range(1, len(probe.sources) + 1)]
    orders = list(range(1, top + 1))
    points = sweep(lambda b, k: make_problem(affinity, cfg, b, k), budgets, orders, losses,
                   solver=cfg.solver, time_limit=cfg.time_limit, progress=progress)
    if not any(p.policy for p in points):
        problem = make_problem(affinity, cfg, budgets[-1], top)
        raise TaskonomyError(f"infeasible at every budget up to {budgets[-1]:g}: "
                             f"{explain_infeasible(problem, cfg.solver, cfg.time_limit)}")
    rows = [[p.budget, p.max_order, t, tr.name, *p.scores.get(t, (math.nan, math.nan))]
            for p in points for t, tr in p.policy.items()]
    evaluated = [t for t in probe.targets if t in losses]
    saved = supervision_saved(points, len(probe.targets), levels)
    summary = [{"budget": p.budget, "max_order": p.max_order, "status": p.status, "objective": p.objective,
                "label_cost": p.label_cost, "supervised": list(p.supervised),
                "mean_gain": _json_float(p.mean_gain), "mean_quality": _json_float(p.mean_quality)} for p in points]
    feasible = [b for b in budgets if any(p.policy for p in points if p.budget == b)]
    shown = sorted({feasible[round(i * (len(feasible) - 1) / 3)] for i in range(4)}) if feasible else []
    run = RunFolder(run_dir)
    return points, [
        _write_csv(run.evaluation, ["budget", "max_order", "target", "transfer", "gain", "quality"], rows),
        _write_csv(run.supervision_saved_csv, list(saved[0]), [list(r.values()) for r in saved]),
        _write_json(run.supervision_saved_json, {
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
    if (run_dir / TRANSFERS_STORE).exists():
        losses = read_losses(run_dir, [target])
    top = max_order or config.taxonomy.max_order
    rows, best = [], None
    for order in range(1, top + 1):
        best = all_for_one(affinity.transfers, target, supervised, order)
        gain, quality = policy_scores({target: best.name}, losses).get(target, (math.nan,) * 2) if best else (
            math.nan, math.nan)
        rows.append({"max_order": order, "transfer": best.name if best else None,
                     "sources": list(best.sources) if best else [], "affinity": best.affinity if best else None,
                     "gain": _json_float(gain), "quality": _json_float(quality)})
    if best is None:
        raise TaskonomyError(f"no transfer into {target} reads only the supervised sources {', '.join(supervised)}")
    doc = {"target": target, "supervised": list(supervised), "max_order": top, "best": rows[-1], "orders": rows}
    title = (f"All-for-one: {target} <- {best.name}, the best among {len(supervised)} supervised sources "
             f"(max order {top})")
    used = [s for s in supervised if s in best.sources]
    figure = taxonomy_figure(used, {target: best}, title, policy_scores({target: best.name}, losses))
    return rows, [_write_json(run_dir / f"all_for_one_{target}.json", doc),
                  save_figure(RunFolder(run_dir).all_for_one(target, "png"), figure)]


def _supervised_from_taxonomy(run_dir: Path) -> list[str]:
    path = run_dir / "taxonomy.json"
    try:
        return list(json.loads(path.read_text())["supervised"])
    except FileNotFoundError:
        raise TaskonomyError(f"pass --supervised, or run `taskonomy solve` first to write {path}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TaskonomyError(f"cannot read the supervised sources from {path}: {err}") from None
