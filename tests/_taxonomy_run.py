"""A synthetic stage II / III run folder for the stage IV tests: transfers.zarr and a consistent affinity.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import zarr

from taskonomy.taxonomy._synthetic import ahp_affinity, synthetic_losses

TINY_TASKS = ["autoencoding", "denoising", "jigsaw", "edge_texture", "depth_zbuffer", "normal", "reshading",
              "curvature", "room_layout", "segment_semantic", "class_object", "class_scene", "egomotion",
              "point_matching"]
SOURCE_ONLY = ("jigsaw",)
NOVEL = "novel_task"  # target-only: added later from the cache, never supervised


def write_run(run_dir: Path, *, tasks: list[str] = TINY_TASKS, max_order: int = 3, n_test: int = 48,
              seed: int = 0, incomplete: tuple[str, ...] = ()) -> dict:
    """transfers.zarr (contract of stage II) and affinity.csv (stage III) for `tasks`, the controls and NOVEL."""
    sources = list(tasks) + ["random", "pixels"]
    targets = [t for t in tasks if t not in SOURCE_ONLY] + [NOVEL]
    losses = synthetic_losses(sources, targets, max_order=max_order, n_test=n_test, seed=seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    root = zarr.open_group(str(run_dir / "transfers.zarr"), mode="w")
    root.attrs.update({"complete": False, "targets": targets, "sources": sources,
                       "test_index": list(range(n_test)), "loss": {t: "l1" for t in targets}})
    for target, (names, table) in losses.items():
        group = root.create_group(target)
        array = group.create_array("losses", shape=table.shape, dtype="float64", chunks=table.shape)
        array[...] = table
        orders = [0 if n in ("scratch", "full") else len(n.split("+")) for n in names]
        group.attrs.update({"transfers": names, "orders": orders, "complete": target not in incomplete})
    root.attrs["complete"] = True  # a finished store may still hold a target that never completed
    columns = sorted({n for names, _ in losses.values() for n in names}, key=lambda n: (n.count("+"), n))
    with (run_dir / "affinity.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["target", *columns])
        for target, (names, table) in losses.items():
            row = dict(zip(names, ahp_affinity(table)))
            out.writerow([target, *[f"{row[c]:.8f}" if c in row else "" for c in columns]])
    return losses
