"""Throughput and peak memory of `data --from-taskonomy`, the streamed import of a Taskonomy folder.

    .venv/bin/python benchmarks/bench_import.py [--size 64] [--images 4000] [--chunk-images 64 256 0] [--threads 2]

Generates a data set (5 tasks: depth, normals, semantic segmentation, edges, scene class), exports it in
Taskonomy's layout without our export file (as a real subset comes), then imports it in a child process (once per
chunk length: the peak follows the chunk, not the number of images) and
prints: images/s and files/s of the import, the child's peak resident memory above its resident size after
imports (Linux: VmHWM, reset through /proc/self/clear_refs after the imports), the import's bound (two chunks of
every array, scenes/_import.py) and the arrays' whole size, which the all-in-memory reader it replaces held at
least.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASKS = ["depth_zbuffer", "normal", "segment_semantic", "edge_texture", "class_scene"]

# the child: imports, records its peak so far, imports the folder, records its peak again
_CHILD = """
import json, math, sys, time
import numpy as np
from taskonomy.runtime import cap_threads
cap_threads(int(sys.argv[4]))
from taskonomy.scenes.taskonomy_read import plan_taskonomy
from taskonomy.scenes._import import memory_bound, write_import
def status(key):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key + ":")))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current resident size: imports' own peak is not counted
before = status("VmRSS")
start = time.perf_counter()
plan, read = plan_taskonomy(sys.argv[1], int(sys.argv[3]), chunk_images=int(sys.argv[5]) or None)
planned = time.perf_counter() - start
write_import(sys.argv[2], plan, read, progress=False)
seconds = time.perf_counter() - start
after = status("VmHWM")
whole = sum(math.prod(s) * np.dtype(d).itemsize for s, d in plan.arrays.values())
print(json.dumps({"seconds": seconds, "planned": planned, "before_kb": before, "after_kb": after,
                  "bound": memory_bound(plan), "whole": whole, "chunk": plan.chunk, "n": plan.n}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--chunk-images", type=int, nargs="+", default=[64, 256, 0],
                        help="one import per value; 0: the store module's policy")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from taskonomy.config import load_config
    from taskonomy.runtime import cap_threads
    from taskonomy.scenes.dataset import build_data
    from taskonomy.scenes.taskonomy_format import EXPORT_FILE, export_taskonomy

    threads = cap_threads(args.threads)
    views = 4
    config = load_config(overrides={"name": "bench", "data": {
        "image_size": args.size, "n_scenes": math.ceil(args.images / views), "views_per_scene": views,
        "tasks": TASKS}})
    print(f"device: CPU, {platform.processor() or platform.machine()}, {threads} threads")
    tmp = Path(tempfile.mkdtemp())
    try:
        start = time.perf_counter()
        build_data(config, tmp / "gen.zarr", progress=False)
        export_taskonomy(tmp / "gen.zarr", tmp / "folder", progress=False)
        (tmp / "folder" / EXPORT_FILE).unlink()
        files = sum(1 for p in (tmp / "folder").rglob("*") if p.is_file())
        folder_mb = sum(p.stat().st_size for p in (tmp / "folder").rglob("*") if p.is_file()) / 1e6
        print(f"folder: {config.data.n_images} images at {args.size} px, {len(TASKS)} tasks, {files} files, "
              f"{folder_mb:.0f} MB of PNG/JSON (made in {time.perf_counter() - start:.0f} s)")
        for chunk in args.chunk_images:
            shutil.rmtree(tmp / "data.zarr", ignore_errors=True)
            child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp / "folder"), str(tmp / "data.zarr"),
                                    str(args.size), str(args.threads), str(chunk)],
                                   capture_output=True, text=True, check=True)
            _report(json.loads(child.stdout.strip().splitlines()[-1]), files)
    finally:
        shutil.rmtree(tmp)


def _report(r: dict, files: int) -> None:
    mb = 2**20
    peak = (r["after_kb"] - r["before_kb"]) / 1024
    print(f"import, chunks of {r['chunk']} images: {r['n'] / r['seconds']:6.1f} images/s, "
          f"{files / r['seconds']:7.1f} files/s ({r['seconds']:.1f} s, of which {r['planned']:.1f} s listing and "
          f"checking every file); peak {peak:.0f} MB above the {r['before_kb'] / 1024:.0f} MB resident after "
          f"imports; bound {r['bound'] / mb:.0f} MB (2 chunks of every array); the arrays whole {r['whole'] / mb:.0f} "
          f"MB (what the all-in-memory reader held at least)")


if __name__ == "__main__":
    main()
