"""Stage I, the feature cache and stage II on a dask cluster against in process, measured side by side in one run.

    .venv/bin/python benchmarks/bench_cluster.py [--only tiny,slice] [--scenes 250] [--tasks normal,...] [--quick]

Two configs: configs/tiny.yaml (14 tasks, 800 images at 32 px) and a 3-target slice of the default config
(data.tasks = train.tasks = transfer.targets = --tasks, --scenes rooms of 4 views, every other setting the
default's). Each runs train, extract and transfer twice from the same data.zarr: (a) in process on 2 threads,
one job per core on one torch thread each (taskonomy.workers), and (b) on a LocalCluster of 2 single-threaded
worker processes (taskonomy.cluster, what `--scheduler` does). transfer.scratch is off in both: the scratch
networks train in the calling process either way, and they are stage I networks on the smaller transfer split.

Before the timed runs, each config runs once at 40 rooms and one epoch in both modes, untimed, so that the
client and every worker have paid their first use of each network shape (a long-lived cluster has).

Prints per stage: the jobs, wall seconds (a) and (b) and their ratio b/a, and the seconds of one job (mean and
max, timed inside the job: (a) around each job function, (b) from the scheduler's task stream), and whether
(b) made exactly (a)'s results (checkpoints' weights and test losses, features.zarr's bytes, transfers.zarr's
losses). The cluster's start-up is timed on its own and not counted in (b).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("train", "extract", "transfer")


class JobClock:
    """Seconds of every in-process job: run_jobs' job function (stage I, stage II) and each source's extraction."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def wrap(self, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds.append(time.perf_counter() - start)
        return timed

    def install(self) -> None:
        from taskonomy.extract import features, pipeline
        from taskonomy.transfer import stage

        for module in (pipeline, stage):
            real = module.run_jobs
            module.run_jobs = lambda fn, jobs, *a, real=real, **k: real(self.wrap(fn), jobs, *a, **k)
        features.extract_source = self.wrap(features.extract_source)


def remote_seconds(stream: list[dict]) -> list[float]:
    """Compute seconds per job from a distributed task stream (a retried job counts its tries)."""
    per_key: dict[str, float] = defaultdict(float)
    for task in stream:
        for part in task.get("startstops", ()):
            if part["action"] == "compute":
                per_key[task["key"]] += part["stop"] - part["start"]
    return list(per_key.values())


def run_stages(config, run_dir: Path, clock: JobClock | None, client=None) -> dict[str, tuple[float, list[float]]]:
    """Every stage on `run_dir`: {stage: (wall seconds, per-job seconds)}."""
    from distributed import get_task_stream

    from taskonomy.extract.pipeline import extract_all, train_all
    from taskonomy.transfer.stage import run_transfer

    out = {}
    for name, fn in zip(STAGES, (train_all, extract_all, run_transfer)):
        start = time.perf_counter()
        if client is None:
            clock.seconds = []
            fn(config, run_dir, progress=False)
            out[name] = (time.perf_counter() - start, list(clock.seconds))
        else:
            with get_task_stream(client) as stream:
                fn(config, run_dir, progress=False)
            out[name] = (time.perf_counter() - start, remote_seconds(stream.data))
    return out


def same_results(a: Path, b: Path) -> dict[str, bool]:
    import torch
    import zarr

    from taskonomy.extract.checkpoints import load_checkpoint

    same = {}
    ok = True
    for path in sorted((a / "models").glob("*.pt")):
        x, y = load_checkpoint(path), load_checkpoint(b / "models" / path.name)
        ok &= torch.equal(x["test_losses"], y["test_losses"]) and all(
            torch.equal(v, y["state_dict"][k]) for k, v in x["state_dict"].items())
    same["train"] = ok
    # the arrays, not the stores' bytes: a source's encoder hash is its checkpoint file's, whose quality row holds
    # the training seconds (tests/extract/test_cluster.py compares the bytes, extracting from the same checkpoints)
    fa, fb = (zarr.open_group(str(r / "features.zarr"), mode="r") for r in (a, b))
    arrays = {name: node for name, node in fa.members(max_depth=None) if isinstance(node, zarr.Array)}
    same["extract"] = bool(fb.attrs["complete"]) and all(
        name in fb and np.array_equal(node[...], fb[name][...]) for name, node in arrays.items())
    ta, tb = (zarr.open_group(str(r / "transfers.zarr"), mode="r") for r in (a, b))
    same["transfer"] = all(ta[t].attrs["transfers"] == tb[t].attrs["transfers"] and
                           np.array_equal(ta[t]["losses"][:], tb[t]["losses"][:], equal_nan=True)
                           for t in ta.attrs["targets"])
    return same


def warm_up(label: str, config, folder: Path, address: str, clock: JobClock) -> float:
    """Every stage of `config` at 40 rooms and one epoch in both modes, untimed: the first use of each network
    shape (imports, oneDNN primitives) is paid once per process, by the client in (a) and by each worker in (b),
    and a long-lived cluster has paid it. Returns the seconds it took."""
    from distributed import Client

    from taskonomy.scenes.dataset import build_data

    start = time.perf_counter()
    small = config.model_copy(update={
        "data": config.data.model_copy(update={"n_scenes": 40}),
        "train": config.train.model_copy(update={"epochs": 1}),
        "transfer": config.transfer.model_copy(update={"epochs": 1})})
    for mode in ("local", "cluster"):
        run = folder / f"{label}.warm.{mode}"
        build_data(small, run / "data.zarr", progress=False)
        if mode == "local":
            run_stages(small, run, clock)
        else:
            with Client(address) as client:
                run_stages(small.model_copy(update={"scheduler": address}), run, None, client)
        shutil.rmtree(run)
    return time.perf_counter() - start


def bench(label: str, config, folder: Path, address: str, clock: JobClock) -> None:
    from distributed import Client

    from taskonomy.scenes.dataset import build_data, open_data

    warm = warm_up(label, config, folder, address, clock)
    data_path = folder / f"{label}.data.zarr"
    build_data(config, data_path, progress=False)
    data = open_data(data_path, config)
    n = {s: int(data[f"splits/{s}"].shape[0]) for s in ("train", "transfer", "test")}
    print(f"\n{label}: {len(data.attrs['tasks'])} tasks ({', '.join(data.attrs['tasks'])}), "
          f"{int(data.attrs['n_images'])} images at {config.data.image_size} px (train {n['train']}, of which "
          f"transfer {n['transfer']}; test {n['test']}); train.epochs {config.train.epochs}, width "
          f"{config.train.width}; transfer.epochs {config.transfer.epochs}, max_order {config.transfer.max_order}, "
          f"scratch off; warmed up untimed at 40 rooms, 1 epoch, both modes ({warm:.0f} s)")
    runs = {}
    for mode in ("local", "cluster"):
        runs[mode] = folder / f"{label}.{mode}"
        runs[mode].mkdir()
        shutil.copytree(data_path, runs[mode] / "data.zarr")
    local = run_stages(config, runs["local"], clock)
    with Client(address) as client:
        remote = run_stages(config.model_copy(update={"scheduler": address}), runs["cluster"], None, client)
    same = same_results(runs["local"], runs["cluster"])
    print(f"{'stage':<9} {'jobs':>4} {'in-process s':>12} {'cluster s':>10} {'ratio b/a':>9} "
          f"{'job s mean a / b':>17} {'job s max a / b':>16}  identical")
    for stage in STAGES:
        (wa, ja), (wb, jb) = local[stage], remote[stage]
        mean = f"{np.mean(ja) if ja else 0:.2f} / {np.mean(jb) if jb else 0:.2f}"
        most = f"{max(ja, default=0):.2f} / {max(jb, default=0):.2f}"
        print(f"{stage:<9} {len(jb):>4} {wa:>12.1f} {wb:>10.1f} {wb / wa:>9.2f} {mean:>17} {most:>16}  "
              f"{'yes' if same[stage] else 'NO'}")
    total_a, total_b = sum(v[0] for v in local.values()), sum(v[0] for v in remote.values())
    print(f"{'all':<9} {'':>4} {total_a:>12.1f} {total_b:>10.1f} {total_b / total_a:>9.2f}")
    work = units(runs["local"], data, config.transfer.epochs)
    cost = {stage: (sum(local[stage][1]), sum(remote[stage][1])) for stage in STAGES}
    per = {stage: " / ".join(f"{1000 * c / work[stage]:.3f}" for c in cost[stage]) for stage in STAGES}
    print(f"per job-thread, (a) / (b): stage I {per['train']} s per 1,000 image-epochs ({work['train']:,}); "
          f"extraction {per['extract']} s per 1,000 images of one source ({work['extract']:,}); stage II "
          f"{per['transfer']} s per 1,000 readout-image-epochs ({work['transfer']:,})")


def units(run_dir: Path, data, epochs: int) -> dict[str, int]:
    """The work of each stage: stage I image-epochs (stage1_quality.csv), images encoded (every source, every
    array), stage II readout-image-epochs (readouts x fitting images x epochs)."""
    import csv

    import zarr

    with (run_dir / "stage1_quality.csv").open() as handle:
        trained = sum(round(float(r["images_per_s"]) * float(r["seconds"])) for r in csv.DictReader(handle))
    features = zarr.open_group(str(run_dir / "features.zarr"), mode="r")
    encoded = sum(node.shape[0] for _, node in features.members(max_depth=None) if isinstance(node, zarr.Array))
    store = zarr.open_group(str(run_dir / "transfers.zarr"), mode="r")
    fitting = int(data["splits/transfer"].shape[0]) - len(store.attrs["validation_index"])
    readouts = sum(len([n for n in store[t].attrs["transfers"] if n not in ("full", "scratch")])
                   for t in store.attrs["targets"])
    return {"train": trained, "extract": encoded, "transfer": readouts * fitting * epochs}


def _warm_up() -> None:
    """The imports a worker that has run jobs has done: torch, Numba (taskonomy.runtime), zarr and the stages."""
    import taskonomy.extract.pipeline  # noqa: F401
    import taskonomy.transfer.stage  # noqa: F401
    from taskonomy.runtime import cap_threads

    cap_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="tiny,slice", help="which configs: tiny, slice or both")
    parser.add_argument("--scenes", type=int, default=250, help="rooms of the default-config slice (4 views each)")
    parser.add_argument("--tasks", default="normal,depth_zbuffer,class_scene",
                        help="the slice's 3 tasks (sources and targets)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 40 rooms and 1 epoch in both configs")
    parser.add_argument("--no-malloc-trim", action="store_true",
                        help="start the workers without dask's MALLOC_TRIM_THRESHOLD_=65536 (docs/scaling.md)")
    args = parser.parse_args()

    from taskonomy.runtime import cap_threads, describe_device

    threads = cap_threads(2)
    from distributed import LocalCluster

    from taskonomy.config import load_config

    print(f"device: {describe_device('cpu', threads)}; (a) in process, {threads} jobs at once on one torch thread "
          f"each; (b) LocalCluster of 2 worker processes x 1 thread")
    quick = ["data.n_scenes=40", "train.epochs=1", "transfer.epochs=1"] if args.quick else []
    configs = {"tiny": load_config(ROOT / "configs" / "tiny.yaml", {"threads": threads},
                                   ["transfer.scratch=false", *quick]),
               "slice": load_config(None, {"threads": threads, "name": "default-slice"},
                                    [f"data.n_scenes={args.scenes}", f"data.tasks=[{args.tasks}]",
                                     f"train.tasks=[{args.tasks}]", f"transfer.targets=[{args.tasks}]",
                                     "transfer.scratch=false", *quick])}
    clock = JobClock()
    clock.install()
    start = time.perf_counter()
    import dask

    trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None} if args.no_malloc_trim else {}
    print(f"workers' MALLOC_TRIM_THRESHOLD_: {'unset' if args.no_malloc_trim else 'dask default (65536)'}")
    with dask.config.set(trim), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            tempfile.TemporaryDirectory() as folder:
        from distributed import Client

        with Client(cluster.scheduler_address) as client:  # a long-lived cluster has its imports done
            client.run(_warm_up)
        print(f"cluster start-up and imports on the workers: {time.perf_counter() - start:.1f} s (not counted below)")
        for label in args.only.split(","):
            bench(label, configs[label], Path(folder), cluster.scheduler_address, clock)


if __name__ == "__main__":
    main()
