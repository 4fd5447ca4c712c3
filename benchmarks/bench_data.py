"""Throughput of the data generator, measured side by side in one process.

    .venv/bin/python benchmarks/bench_data.py [--size 64] [--images 1024] [--threads 2]

Prints: fully labelled images/s of `taskonomy data` end to end (render, labels, compress, write to
Zarr) with every task, MB/s written, the ray caster alone in Numba against the plain NumPy ray caster
of the same scenes and cameras (the ratio), and the device it ran on.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _timing import best_of



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048, help="images for the end-to-end run")
    parser.add_argument("--reference-views", type=int, default=16, help="views for the slow NumPy baseline")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from taskonomy.runtime import cap_threads

    threads = cap_threads(args.threads)
    from taskonomy.config import load_config
    from taskonomy.scenes.dataset import _scene, build_data, generate_images
    from taskonomy.scenes._reference import render_reference
    from taskonomy.scenes.render import render
    from taskonomy.scenes.scene import sample_camera

    views = 4
    config = load_config(overrides={"name": "bench", "data": {
        "image_size": args.size, "n_scenes": math.ceil(args.images / views), "views_per_scene": views}})
    data = config.data
    print(f"device: CPU, {platform.processor() or platform.machine()}, {threads} threads (torch, Numba, Dask capped)")
    print(f"tasks: {len(data.task_names())} with labels (every task), image {args.size}x{args.size}")

    generate_images(data, 0, np.arange(8))  # compile (or load the Numba cache) outside the timings
    tmp = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        build_data(config, tmp / "data.zarr", progress=False)
        elapsed = time.perf_counter() - start
        written = sum(p.stat().st_size for p in (tmp / "data.zarr").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(tmp)
    n = data.n_images
    print(f"end to end (render + labels + compress + write): {n / elapsed:8.1f} images/s, "
          f"{written / elapsed / 1e6:6.1f} MB/s written ({written / n / 1e3:.1f} kB/image compressed)")

    labels_only = best_of(lambda: generate_images(data, 0, np.arange(256)), 2)
    print(f"generate_images (no I/O), batch 256:              {256 / labels_only:8.1f} images/s")

    rng = np.random.default_rng(0)
    scenes = [_scene(data, 0, i) for i in range(args.reference_views)]
    cameras = [sample_camera(s, rng, math.radians(data.fov_degrees)) for s in scenes]
    render(scenes, cameras, args.size)
    numba_s = best_of(lambda: render(scenes * 16, cameras * 16, args.size), 3) / 16
    numpy_s = best_of(lambda: render_reference(scenes, cameras, args.size), 1)
    k = args.reference_views
    print(f"ray caster, full buffers + shadows: Numba {k / numba_s:8.1f} views/s, "
          f"NumPy reference {k / numpy_s:8.1f} views/s, ratio {numpy_s / numba_s:6.1f}x")


if __name__ == "__main__":
    main()
