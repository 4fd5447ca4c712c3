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

import hashlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.ahp import kernels
from taskonomy.artifacts import (BASELINES, SummaryRow, TargetLosses, read_losses, read_summary, write_affinity,
                                 write_summary)
from taskonomy.config import Config, content_hash
from taskonomy.runfolder import FILES, RunFolder, write_csv, write_json

__all__ = ["AHP_VERSION", "OUTPUTS", "AhpOutcome", "order_transfers", "run_ahp"]

AHP_VERSION = "1"


@dataclass(frozen=True)
class AhpOutcome:
    """What `run_ahp` did ("written" or "up to date") and the per-target summary (ahp_summary.csv)."""

    state: str
    summary: list[SummaryRow]


OUTPUTS = tuple(FILES[k] for k in ("affinity", "affinity_first_order", "affinity_ci", "ahp_summary", "heatmap"))


def _outputs(run: RunFolder) -> list[Path]:
    return [run.path / name for name in OUTPUTS]


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
    # what the losses mean, not how stage II spent its time (wait_share) or where its chunks lie (inventories)
    meaning = {k: v for k, v in attrs.items() if k not in ("wait_share", "arrays", "chunks")}
    return content_hash(AHP_VERSION, meaning, digests, config.ahp.model_dump(mode="json"), config.seed)


def _up_to_date(run: RunFolder, digest: str) -> bool:
    try:
        stamp = json.loads(run.ahp_stamp.read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("hash") == digest and all(path.exists() for path in _outputs(run))


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


def _tables(targets: list[TargetLosses], columns: list[str], result: kernels.AhpResult,
            boots: list) -> tuple[np.ndarray, list[list[Any]], list[SummaryRow]]:
    """(affinity matrix targets x columns, rows of affinity_ci.csv, the summary per target)."""
    affinity = np.full((len(targets), len(columns)), math.nan)
    ci_rows, summary = [], []
    for r, (t, vector, lam, its, conv, boot) in enumerate(zip(targets, result.vectors, result.lambda_max,
                                                              result.iterations, result.converged, boots)):
        by_name = dict(zip(t.transfers, vector))
        affinity[r] = [by_name.get(c, math.nan) for c in columns]
        for i, name in enumerate(t.transfers):
            low, high = (boot.low[i], boot.high[i]) if boot else (math.nan, math.nan)
            ci_rows.append([t.target, name, t.orders[i], vector[i], low, high])
        first = [i for i, o in enumerate(t.orders) if o == 1]
        top = boot.top if boot else (max(first, key=lambda i: vector[i]) if first else None)
        summary.append(SummaryRow(
            t.target, len(t.transfers), int(t.losses.shape[1]), float(lam),
            float(kernels.consistency_ratio(lam, len(vector))), int(its), bool(conv),
            t.transfers[top] if top is not None else None, float(vector[top]) if top is not None else math.nan,
            float(boot.top_stability) if boot else math.nan))
    return affinity, ci_rows, summary


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


def run_ahp(config: Config, run_dir: str | Path, force: bool = False) -> AhpOutcome:
    """Stage III end to end: the affinity tables, intervals, summary and heatmap of every complete target."""
    run = RunFolder(run_dir)
    table = read_losses(run.path, purpose="the affinities")
    targets = list(table.targets.values())
    if not targets:
        raise TaskonomyError(f"{table.path} holds no complete target; run `taskonomy transfer`")
    for t in targets:
        kernels.check_losses(t.losses, t.target, t.transfers)
    digest = _input_hash(table.attrs, targets, config)
    if not force and _up_to_date(run, digest):
        return AhpOutcome("up to date", read_summary(run.path))
    columns = order_transfers({n for t in targets for n in t.transfers}, table.sources)
    first_order = [c for c in columns if c not in BASELINES and "+" not in c]
    result, boots = _compute(targets, config)
    affinity, ci_rows, summary = _tables(targets, columns, result, boots)
    run.ahp_stamp.unlink(missing_ok=True)  # outputs half replaced must never look up to date
    names = [t.target for t in targets]
    write_affinity(run.affinity, names, columns, affinity)
    # the same numbers, not renormalised: one transfer has one affinity in every file
    write_affinity(run.affinity_first_order, names, first_order, affinity[:, [columns.index(c) for c in first_order]])
    write_csv(run.affinity_ci, ["target", "transfer", "order", "affinity", "low", "high"], ci_rows)
    write_summary(run.ahp_summary, summary)
    from taskonomy.ahp.heatmap import plot_affinity_heatmap  # matplotlib only when there is something to plot

    first, ratio = _first_order_views(targets, first_order, result)
    plot_affinity_heatmap(run.heatmap, names, first_order, first, ratio,
                          title=f"Task affinities, first order ({config.name}, {targets[0].losses.shape[1]} test "
                                f"images)")
    write_json(run.ahp_stamp, {"hash": digest, "version": AHP_VERSION, "outputs": [p.name for p in _outputs(run)],
                               "targets": names})
    return AhpOutcome("written", summary)
