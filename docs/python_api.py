"""Explore a finished run from Python (a notebook works the same): affinities, losses, taxonomies, a new target.

    python docs/python_api.py runs/default            # reads only
    python docs/python_api.py runs/default --add      # also adds a target `bright` from the cached features

Every table is an xarray object labelled with task and transfer names; every call raises the CLI's one-line
TaskonomyError on bad input or a damaged store.
"""

from __future__ import annotations

import sys

import numpy as np

import taskonomy


def main(path: str, add: bool = False) -> None:
    run = taskonomy.open_run(path)
    print(run, "| targets:", ", ".join(run.targets))

    # affinities: target x transfer; first order are the single sources
    affinity = run.affinity
    first = affinity.where(affinity.order == 1, drop=True)
    best = first.fillna(-1).idxmax("transfer")
    print("\nbest single source per target:")
    for target, source in zip(best.target.values, best.values, strict=True):
        print(f"  {target:<18} <- {source:<18} {float(first.sel(target=target, transfer=source)):.3f}")

    # per-image test losses of one target: transfer x image
    target = run.targets[0]
    means = run.losses(target).mean("image").to_series().sort_values()
    print(f"\nmean test loss into {target}, best five:\n{means.head().to_string()}")

    # the taxonomy at a budget, and gain / quality over budgets (nothing written)
    solution = run.solve(budget=1, max_order=2)
    print(f"\nbudget 1: supervise {', '.join(solution.supervised)} (objective {solution.objective:.3f})")
    for point in run.evaluate(max_order=1):
        print(f"  budget {point.budget:g}: gain {point.mean_gain:.3f}, quality {point.mean_quality:.3f}")

    if add:  # a new target answered from the cached features: is the view brighter than the median?
        def bright(data) -> np.ndarray:
            mean = data["images/rgb"][:].astype(np.float32).mean(axis=(1, 2, 3))
            return (mean > np.median(mean)).astype(np.float32)[:, None]

        outcome = run.add_target("bright", label_fn=bright, loss="bce")
        print(f"\nadded target bright: {outcome.describe('bright')}")
        print(run.losses("bright").mean("image").to_series().sort_values().head(3).to_string())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], add="--add" in sys.argv[2:])
