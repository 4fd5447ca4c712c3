"""Stage III as the CLI runs it: transfers.zarr -> affinities, consistency, bootstrap intervals, heatmap.

    taskonomy --config configs/tiny.yaml ahp [--force]

Reads <run>/transfers.zarr (from `taskonomy transfer`) and writes into <run>:
- affinity.csv: targets x transfers ("full", first order in registry order, higher orders, "scratch" last);
  empty where a target did not try a transfer; each row sums to 1.
- affinity_first_order.csv: targets x single sources, the same numbers as affinity.csv, *not* renormalised,
  so that one transfer has one affinity in every file (a row sums to less than 1: full, scratch and the
  higher orders hold the rest).
- affinity_ci.csv: target, transfer, order, affinity and its bootstrap percentile interval (low, high).
- ahp_summary.csv: per target, the consistency ratio, power-iteration count and convergence, the top
  first-order source and how often it stays on top over the bootstrap resamples.
- affinity_heatmap.png: mean loss / full's mean loss beside the AHP affinities (first order), clustered.
- ahp.json: the stamp, written last: the hash of transfers.zarr's attributes and losses and of the config.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.ahp import kernels
from taskonomy.config import Config, content_hash
from taskonomy.store import open_complete

__all__ = ["AHP_VERSION", "OUTPUTS", "TargetLosses", "order_transfers", "read_transfers", "run_ahp"]

AHP_VERSION = "1"
STAMP = "ahp.json"
OUTPUTS = ("affinity.csv", "affinity_first_order.csv", "affinity_ci.csv", "ahp_summary.csv",
           "affinity_heatmap.png")
BASELINES = ("full", "scratch")


@dataclass(frozen=True)
class TargetLosses:
    """One target's rows of transfers.zarr: per-image test losses (n_transfers, n_test)."""

    target: str
    transfers: list[str]
    orders: list[int]
    losses: np.ndarray


def _check_transfers(target: str, names: list[str], orders: list[int], n_rows: int) -> None:
    where = f"transfers.zarr: target {target}"
    if len(names) != n_rows or len(orders) != n_rows:
        raise TaskonomyError(f"{where}: {len(names)} transfer names and {len(orders)} orders for {n_rows} rows")
    if len(set(names)) != len(names):
        raise TaskonomyError(f"{where}: a transfer is listed twice")
    for name, order in zip(names, orders):
        sources = [] if name in BASELINES else name.split("+")
        for source in sources:
            try:
                registry.validate_name(source)
            except TaskonomyError as err:
                raise TaskonomyError(f"{where}: transfer {name!r}: {err}") from None
        if order != len(sources):
            raise TaskonomyError(f"{where}: transfer {name} has order {order}, expected {len(sources)}")


def read_transfers(path: Path) -> tuple[dict[str, Any], list[TargetLosses]]:
    """Root attributes and every complete target; a target not marked complete is skipped with a warning."""
    root = open_complete(path, "taskonomy transfer")
    attrs = dict(root.attrs)
    n_test = len(attrs.get("test_index", [])) or None
    found = []
    for target in attrs.get("targets", []):
        group = root.get(target)
        if group is None or "losses" not in group or not group.attrs.get("complete", False):
            warnings.warn(f"target {target} is not complete in {path}; it is left out of the affinities",
                          TaskonomyWarning, stacklevel=2)
            continue
        losses = np.asarray(group["losses"][...], dtype=np.float64)  # (n_transfers, n_test)
        names = [str(n) for n in group.attrs.get("transfers", [])]
        orders = [int(o) for o in group.attrs.get("orders", [])]
        if losses.ndim != 2 or (n_test is not None and losses.shape[1] != n_test):
            raise TaskonomyError(f"transfers.zarr: target {target}: losses of shape {losses.shape}, expected "
                                 f"(n_transfers, {n_test or 'n_test'})")
        _check_transfers(target, names, orders, losses.shape[0])
        found.append(TargetLosses(target, names, orders, kernels.check_losses(losses, target, names)))
    if not found:
        raise TaskonomyError(f"{path} holds no complete target; run `taskonomy transfer`")
    return attrs, found


def order_transfers(names: set[str], sources: list[str]) -> list[str]:
    """Column order: full, first order in registry order (then the store's own source order), higher orders
    by order and then by their sources' positions, scratch last."""
    rank = {t.name: i for i, t in enumerate(registry.all_tasks())}
    rank.update({s: len(rank) + i for i, s in enumerate(s for s in sources if s not in rank)})

    def key(name: str) -> tuple:
        parts = name.split("+")
        return (len(parts), [rank.get(p, len(rank)) for p in parts], name)

    middle = sorted((n for n in names if n not in BASELINES), key=key)
    return [n for n in ("full",) if n in names] + middle + [n for n in ("scratch",) if n in names]


def _input_hash(attrs: dict[str, Any], targets: list[TargetLosses], config: Config) -> str:
    digests = {t.target: [t.transfers, t.orders, hashlib.sha256(t.losses.tobytes()).hexdigest()] for t in targets}
    return content_hash(AHP_VERSION, attrs, digests, config.ahp.model_dump(mode="json"), config.seed)


def _up_to_date(run_dir: Path, digest: str) -> bool:
    try:
        stamp = json.loads((run_dir / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("hash") == digest and all((run_dir / name).exists() for name in OUTPUTS)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.12g}"
    return "" if value is None else str(value)


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\n")
    out.writerow(header)
    out.writerows([[_cell(v) for v in row] for row in rows])
    _write_atomic(path, text.getvalue())


def _compute(targets: list[TargetLosses], config: Config) -> tuple[kernels.AhpResult, list]:
    cfg = config.ahp
    result = kernels.affinities([t.losses for t in targets], cfg.tolerance, cfg.max_iter)
    for t, converged, iterations in zip(targets, result.converged, result.iterations):
        if not converged:
            warnings.warn(f"target {t.target}: power iteration did not converge in {iterations} iterations "
                          f"(tolerance {cfg.tolerance}); its affinities are approximate", TaskonomyWarning,
                          stacklevel=3)
    boots = []
    for t in targets:
        first = np.array(t.orders) == 1
        if cfg.resamples == 0:
            boots.append(None)
            continue
        # one seed for every target: targets share the test images, so each resample draws the same images
        boot = kernels.bootstrap(t.losses, cfg.resamples, cfg.confidence, config.seed,
                                 first if first.any() else None, cfg.tolerance, cfg.max_iter)
        if boot.unconverged:
            warnings.warn(f"target {t.target}: {boot.unconverged} of {cfg.resamples} bootstrap resamples did not "
                          f"converge", TaskonomyWarning, stacklevel=3)
        boots.append(boot)
    return result, boots


def _tables(targets: list[TargetLosses], columns: list[str], result: kernels.AhpResult, boots: list) -> dict:
    affinity_rows, ci_rows, summary_rows = [], [], []
    for t, vector, lam, its, conv, boot in zip(targets, result.vectors, result.lambda_max, result.iterations,
                                               result.converged, boots):
        by_name = dict(zip(t.transfers, vector))
        affinity_rows.append([t.target] + [by_name.get(c, math.nan) for c in columns])
        for i, name in enumerate(t.transfers):
            low, high = (boot.low[i], boot.high[i]) if boot else (math.nan, math.nan)
            ci_rows.append([t.target, name, t.orders[i], vector[i], low, high])
        first = [i for i, o in enumerate(t.orders) if o == 1]
        top = boot.top if boot else (max(first, key=lambda i: vector[i]) if first else None)
        summary_rows.append([
            t.target, len(t.transfers), t.losses.shape[1], float(lam), kernels.consistency_ratio(lam, len(vector)),
            int(its), bool(conv), t.transfers[top] if top is not None else "", vector[top] if top is not None
            else math.nan, boot.top_stability if boot else math.nan])
    return {"affinity": affinity_rows, "ci": ci_rows, "summary": summary_rows}


def _first_order_views(targets: list[TargetLosses], sources: list[str],
                       result: kernels.AhpResult) -> tuple[np.ndarray, np.ndarray]:
    """(targets, sources) affinities and mean loss / full's mean loss; NaN where not tried."""
    affinity = np.full((len(targets), len(sources)), math.nan)
    ratio = np.full_like(affinity, math.nan)
    for r, (t, vector) in enumerate(zip(targets, result.vectors)):
        means = dict(zip(t.transfers, t.losses.mean(axis=1)))
        for c, source in enumerate(sources):
            if source in means:
                affinity[r, c] = vector[t.transfers.index(source)]
                if means.get("full", 0) > 0:
                    ratio[r, c] = means[source] / means["full"]
    return affinity, ratio


def run_ahp(config: Config, run_dir: Path, force: bool = False) -> dict[str, Any]:
    """Stage III end to end; returns {"state": "written" | "up to date", "summary": rows of ahp_summary.csv}."""
    run_dir = Path(run_dir)
    attrs, targets = read_transfers(run_dir / "transfers.zarr")
    digest = _input_hash(attrs, targets, config)
    summary_path = run_dir / "ahp_summary.csv"
    if not force and _up_to_date(run_dir, digest):
        with summary_path.open(newline="") as handle:
            return {"state": "up to date", "summary": list(csv.DictReader(handle))}
    columns = order_transfers({n for t in targets for n in t.transfers}, list(attrs.get("sources", [])))
    first_order = [c for c in columns if c not in BASELINES and "+" not in c]
    result, boots = _compute(targets, config)
    tables = _tables(targets, columns, result, boots)
    (run_dir / STAMP).unlink(missing_ok=True)  # outputs half replaced must never look up to date
    _write_csv(run_dir / "affinity.csv", ["target", *columns], tables["affinity"])
    first_rows = [[row[0]] + [row[1 + columns.index(c)] for c in first_order] for row in tables["affinity"]]
    _write_csv(run_dir / "affinity_first_order.csv", ["target", *first_order], first_rows)
    _write_csv(run_dir / "affinity_ci.csv", ["target", "transfer", "order", "affinity", "low", "high"], tables["ci"])
    header = ["target", "transfers", "images", "lambda_max", "consistency_ratio", "iterations", "converged",
              "top_source", "top_source_affinity", "top_source_stability"]
    _write_csv(summary_path, header, tables["summary"])
    from taskonomy.ahp.heatmap import plot_affinity_heatmap  # matplotlib only when there is something to plot

    affinity, ratio = _first_order_views(targets, first_order, result)
    plot_affinity_heatmap(run_dir / "affinity_heatmap.png", [t.target for t in targets], first_order, affinity,
                          ratio, title=f"Task affinities, first order ({config.name}, "
                                       f"{targets[0].losses.shape[1]} test images)")
    _write_atomic(run_dir / STAMP, json.dumps({"hash": digest, "version": AHP_VERSION, "outputs": list(OUTPUTS),
                                               "targets": [t.target for t in targets]}, indent=1) + "\n")
    return {"state": "written", "summary": [dict(zip(header, map(_cell, row))) for row in tables["summary"]]}
