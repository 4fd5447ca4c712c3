"""Screening's curve: readouts trained against agreement with the unscreened run, per transfer.screen setting.

    .venv/bin/python benchmarks/screen_curve.py --reference runs/default --work /tmp/curve --keep 4,8,12 --beam 2
        [--estimator logme] [--budgets 5] [--fresh 8,4]

On a finished unscreened run (`--reference`, read only; the BIP's max order is its config's), per setting a copy
of it in `--work`, `taskonomy transfer` with transfer.screen, then `taskonomy ahp`. The copy keeps every row
whose stamp the unscreened run has (a kept row's losses are those a fresh run trains: transfer/train.py's
determinism), so only the beam sets the unscreened run never tried are trained there; `--fresh` settings are also
run from scratch (a copy without transfers.zarr: stage II as `taskonomy transfer` times it, scratch networks
included), and their losses are checked equal to the first copy's. Against the reference it measures:
- readouts: the readout rows of the screened store (what a fresh screened run trains) and their share;
- first-order Spearman: per target, the screened run's first-order affinities against the reference's, over
  every source with the screened-out ones tied last, and over the sources both tried; means over targets;
- the BIP at budgets 1..B on both affinity.csv: the same supervised set, and the share of targets given the same
  transfer (an infeasible budget matches nothing); also, for diagnosis, with every screened-out first-order
  transfer put back at affinity 0 (available, worth nothing), which no stage does.
Prints one line per setting and writes curve.json in --work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np


def _copy(reference: Path, target: Path, *drop: str) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(reference, target, ignore=lambda folder, names: [n for n in names if Path(folder) == reference
                                                                     and n in (*drop, ".lock", "report")])
    return target


def _taskonomy(run_dir: Path, *args: str) -> float:
    """`taskonomy -q --run-dir RUN_DIR ARGS` in this process; its wall seconds (a failure raises)."""
    from taskonomy.cli import main

    start = time.perf_counter()
    if main(["-q", "--run-dir", str(run_dir), *args]) != 0:
        raise SystemExit(f"taskonomy {' '.join(args)} failed on {run_dir}")
    return time.perf_counter() - start


def _first_order(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k not in ("full", "scratch") and "+" not in k}


def _spearman(reference, screened) -> tuple[float, float]:
    """Mean per-target Spearman of the first-order affinities: every source (screened out tied last), and the
    sources both tried."""
    from scipy import stats

    every, tried = [], []
    for target in reference.targets:
        ref, mine = _first_order(reference.row(target)), _first_order(screened.row(target))
        names = list(ref)
        every.append(stats.spearmanr([ref[n] for n in names], [mine.get(n, -1.0) for n in names]).statistic)
        common = [n for n in names if n in mine]
        if len(common) > 2:
            tried.append(stats.spearmanr([ref[n] for n in common], [mine[n] for n in common]).statistic)
    return float(np.nanmean(every)), float(np.nanmean(tried)) if tried else math.nan


def _bip(reference_dir: Path, screened_dir: Path, budgets: int, zero_filled: bool) -> list[dict]:
    from taskonomy.config import load_config
    from taskonomy.runfolder import RunFolder
    from taskonomy.taxonomy.bip import Transfer, solve
    from taskonomy.taxonomy.stage import make_problem, read_affinity

    cfg = load_config(RunFolder(reference_dir).config).taxonomy
    ref, mine = read_affinity(reference_dir), read_affinity(screened_dir)
    if zero_filled:
        have = {(tr.sources, tr.target) for tr in mine.transfers}
        extra = [Transfer(tr.sources, tr.target, 0.0) for tr in ref.transfers
                 if tr.order == 1 and tr.sources != (tr.target,) and (tr.sources, tr.target) not in have]
        mine = dataclasses.replace(mine, transfers=[*mine.transfers, *extra])
    out = []
    for budget in range(1, budgets + 1):
        a = solve(make_problem(ref, cfg, budget, cfg.max_order), solver=cfg.solver, time_limit=cfg.time_limit)
        b = solve(make_problem(mine, cfg, budget, cfg.max_order), solver=cfg.solver, time_limit=cfg.time_limit)
        same = [t for t in a.policy if t in b.policy and a.policy[t].name == b.policy[t].name]
        out.append({"budget": budget, "reference": list(a.supervised), "screened": list(b.supervised),
                    "status": b.status, "same_set": b.status == "optimal" and set(a.supervised) == set(b.supervised),
                    "same_transfer": len(same) / max(len(a.policy), 1)})
    return out


def _readouts(run_dir: Path) -> tuple[int, int]:
    """(first-order, higher-order) readout rows of the store."""
    from taskonomy.artifacts import read_losses

    tables = read_losses(run_dir).targets.values()
    first = sum(o == 1 for t in tables for n, o in zip(t.transfers, t.orders) if n not in ("full", "scratch"))
    return first, sum(o > 1 for t in tables for o in t.orders)


def measure(reference: Path, work: Path, estimator: str, keep: int, beam: int, budgets: int,
            fresh: bool) -> dict:
    from taskonomy import artifacts

    screen = f"transfer.screen={{estimator: {estimator}, keep: {keep}, beam: {beam}}}"
    copy = _copy(reference, work / f"k{keep}_m{beam}")
    seconds = _taskonomy(copy, "--set", screen, "transfer")
    _taskonomy(copy, "ahp")
    first, higher = _readouts(copy)
    ref_first, ref_higher = _readouts(reference)
    every, tried = _spearman(artifacts.read_affinity(reference), artifacts.read_affinity(copy))
    bip, zero = _bip(reference, copy, budgets, False), _bip(reference, copy, budgets, True)
    doc = {"estimator": estimator, "keep": keep, "beam": beam, "readouts": first + higher,
           "readouts_first": first, "readouts_higher": higher, "reference_readouts": ref_first + ref_higher,
           "share": (first + higher) / (ref_first + ref_higher), "spearman_every": every, "spearman_tried": tried,
           "budgets_same_set": sum(b["same_set"] for b in bip),
           "same_transfer": [round(b["same_transfer"], 3) for b in bip], "bip": bip,
           "budgets_same_set_zero_filled": sum(b["same_set"] for b in zero),
           "same_transfer_zero_filled": [round(b["same_transfer"], 3) for b in zero],
           "reuse_seconds": round(seconds, 1)}
    if fresh:
        scratch = _copy(reference, work / f"k{keep}_m{beam}_fresh", "transfers.zarr")
        doc["stage2_seconds"] = round(_taskonomy(scratch, "--set", screen, "transfer"), 1)
        a, b = artifacts.read_losses(copy).targets, artifacts.read_losses(scratch).targets
        doc["fresh_equals_reused"] = all(a[t].transfers == b[t].transfers and np.array_equal(a[t].losses, b[t].losses)
                                         for t in a)
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--estimator", default="logme")
    parser.add_argument("--keep", default="4,8,12")
    parser.add_argument("--beam", type=int, default=2)
    parser.add_argument("--budgets", type=int, default=5)
    parser.add_argument("--fresh", default="", help="the keep values also trained from scratch and timed")
    args = parser.parse_args()
    from taskonomy.runfolder import RunFolder

    args.work.mkdir(parents=True, exist_ok=True)
    timings = RunFolder(args.reference).run_timings
    reference_seconds = json.loads(timings.read_text())["seconds"].get("transfer") if timings.is_file() else None
    fresh = {int(k) for k in args.fresh.split(",") if k}
    results = []
    for keep in [int(k) for k in args.keep.split(",")]:
        doc = measure(args.reference, args.work, args.estimator, keep, args.beam, args.budgets, keep in fresh)
        if reference_seconds and "stage2_seconds" in doc:
            doc["stage2_share"] = round(doc["stage2_seconds"] / reference_seconds, 3)
        results.append(doc)
        print(f"keep {keep:>2} beam {args.beam}: {doc['readouts']} of {doc['reference_readouts']} readouts "
              f"({doc['share']:.0%}); Spearman {doc['spearman_every']:.3f} (tried {doc['spearman_tried']:.3f}); "
              f"same set {doc['budgets_same_set']} of {args.budgets}, same transfer {doc['same_transfer']}; "
              f"zero-filled {doc['budgets_same_set_zero_filled']}, {doc['same_transfer_zero_filled']}; "
              f"stage II {doc.get('stage2_seconds', '-')} s of {reference_seconds} "
              f"({doc.get('stage2_share', '-')}), fresh = reused: {doc.get('fresh_equals_reused', '-')}",
              flush=True)
    (args.work / "curve.json").write_text(json.dumps({"reference": str(args.reference),
                                                      "reference_stage2_seconds": reference_seconds,
                                                      "settings": results}, indent=1))


if __name__ == "__main__":
    main()
