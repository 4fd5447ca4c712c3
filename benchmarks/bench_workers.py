"""The thread layout of stage I and II, measured side by side in one process: jobs one after another on every
core against jobs side by side on one thread each (taskonomy.workers.run_jobs, what `train` and `transfer` do).

    .venv/bin/python benchmarks/bench_workers.py [--threads 2] [--epochs 2] [--tasks normal,depth_zbuffer,...]

Generates a small data set of the default config's kind (32 px; 1,000 images unless --scenes says otherwise) in a
temporary folder, then trains the same stage I networks (a) one after another with torch on `threads` threads,
the layout before, and (b) `threads` at a time on one thread each. Prints both times, their ratio, images/s and
whether (b)'s weights equal those of (b) run on one worker (they must: one thread per job makes the weights
independent of the core count).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from taskonomy.runtime import cap_threads, describe_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="cores to use (default: all)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--scenes", type=int, default=250)
    parser.add_argument("--tasks", default="normal,depth_zbuffer,class_scene,keypoints2d")
    args = parser.parse_args()
    threads = cap_threads(args.threads)

    from taskonomy.config import Config, DataConfig, TrainConfig
    from taskonomy.extract.stage1 import train_task
    from taskonomy.scenes.dataset import build_data, open_data
    from taskonomy.workers import run_jobs

    tasks = args.tasks.split(",")
    config = Config(data=DataConfig(n_scenes=args.scenes, tasks=tasks), train=TrainConfig(epochs=args.epochs))
    with tempfile.TemporaryDirectory() as folder:
        build_data(config, Path(folder) / "data.zarr", progress=False)
        data = open_data(Path(folder) / "data.zarr", config)
        n = data["splits/train"].shape[0]

        def train(task: str):
            return train_task(task, data, config.train, 7, "cpu", progress=False).state_dict

        print(f"{describe_device('cpu', threads)}; {len(tasks)} stage I networks ({', '.join(tasks)}), "
              f"{n} train images at 32 px, {args.epochs} epochs")
        torch.set_num_threads(threads)
        start = time.perf_counter()
        for task in tasks:
            train(task)
        before = time.perf_counter() - start
        start = time.perf_counter()
        side = run_jobs(train, tasks, threads)
        after = time.perf_counter() - start
        alone = run_jobs(train, tasks, 1)
        same = all(torch.equal(a[k], b[k]) for a, b in zip(side, alone, strict=True) for k in a)
        work = len(tasks) * n * args.epochs
        print(f"(a) one after another on {threads} threads: {before:.1f} s ({work / before:.0f} images/s)")
        print(f"(b) {threads} side by side on one thread each: {after:.1f} s ({work / after:.0f} images/s)")
        print(f"ratio (a)/(b): {before / after:.2f}x; (b)'s weights equal one worker's: {same}")


if __name__ == "__main__":
    main()
