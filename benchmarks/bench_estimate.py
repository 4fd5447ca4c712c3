"""Transferability estimators against stage II's readouts for the same targets, side by side in one process.

    .venv/bin/python benchmarks/bench_estimate.py --run-dir runs/default [--targets normal,class_scene] [--threads 2]

On a finished run folder (read only: its features.zarr, data.zarr and stage I checkpoints), prints with the device:
(a) every estimator for every target of the run, Numba compiled afresh (its on-disk cache is pointed at an
    empty folder), against the stage II seconds the run recorded (run_timings.json: another process and time),
    and the features read per second;
(b) stage II's first-order readouts of the chosen targets (`--targets all`: every target), trained as
    `taskonomy transfer` trains them (every cached source but the target, the run's transfer settings, one job
    per target side by side on one thread each), against every estimator for the same targets, in this process.
Nothing is written to the run folder.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-estimate-numba-")  # compile included
atexit.register(shutil.rmtree, os.environ["NUMBA_CACHE_DIR"], ignore_errors=True)


def _readout_jobs(config, run_dir: Path, targets: list[str]):
    """ReadoutJobs of the targets' first-order transfers, built as transfer.stage.run_transfer builds them."""
    from taskonomy import tasks as registry
    from taskonomy.extract.checkpoints import load_checkpoint
    from taskonomy.extract.pipeline import source_names
    from taskonomy.runfolder import RunFolder
    from taskonomy.scenes.dataset import open_data
    from taskonomy.torchutil import fit_scaler
    from taskonomy.transfer.stage import _split_labels, _target_seed, validation_part
    from taskonomy.transfer.train import ReadoutJob

    run = RunFolder(run_dir)
    data = open_data(run.data, config)
    held = validation_part(data, config)
    sources = source_names(config, list(data.attrs["tasks"]))
    jobs = []
    for name in targets:
        task = registry.get(name)
        path = run.checkpoint(name)
        scaler = load_checkpoint(path)["scaler"] if path.is_file() else \
            fit_scaler(task, _split_labels(data, name, "train")).as_dict()
        jobs.append(ReadoutJob(name, [(s,) for s in sources if s != name], _split_labels(data, name, "transfer"),
                               _split_labels(data, name, "test"), scaler, _target_seed(config.seed, name), task, held))
    return jobs, int(data.attrs["image_size"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/default", help="a finished run folder (read only)")
    parser.add_argument("--targets", default="normal,class_scene", help="targets of (b), comma separated, or all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    if not (run_dir / "features.zarr").is_dir() or not (run_dir / "data.zarr").is_dir():
        # `make bench` on a fresh clone: nothing to measure yet, and no reason to fail the other benchmarks
        print(f"bench_estimate: skipped: {run_dir} is not a finished run folder (make one with `make demo`)")
        return

    from taskonomy.runtime import cap_threads, describe_device

    threads = cap_threads(args.threads)
    import json

    from taskonomy.config import load_config
    from taskonomy.runfolder import RunFolder
    from taskonomy.transfer.estimate import compute_estimates
    from taskonomy.transfer.stage import _run_jobs

    config = load_config(RunFolder(run_dir).config).model_copy(update={"threads": threads})
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    print(f"device: {describe_device('cpu', threads)}; run {run_dir}; targets {', '.join(targets)}")

    start = time.perf_counter()
    everything = compute_estimates(config, run_dir)  # the first call: Numba compiles here
    all_seconds = time.perf_counter() - start
    timings = everything.timings()
    try:
        recorded = json.loads(RunFolder(run_dir).run_timings.read_text())["seconds"]["transfer"]
    except (OSError, ValueError, KeyError):
        recorded = None
    ratio = f"{all_seconds / recorded:.2%} of the run's recorded stage II, {recorded:.0f} s" if recorded else \
        "no run_timings.json to compare with"
    print(f"(a) every estimator, {len(everything.targets)} targets x {len(everything.sources)} sources, Numba "
          f"compiled: {all_seconds:6.2f} s: {ratio}; features read at {timings['features_per_second']:.0f} "
          f"images x sources/s ({timings['megabytes_per_second']:.1f} MB/s); " + ", ".join(
              f"{e} {s:.2f} s" for e, s in everything.seconds.items()))

    targets = everything.targets if targets == ["all"] else targets
    start = time.perf_counter()
    compute_estimates(config, run_dir, only=targets)
    estimate_seconds = time.perf_counter() - start
    jobs, size = _readout_jobs(config, run_dir, targets)
    block = max(len(j.labels_transfer) for j in jobs)
    start = time.perf_counter()
    _run_jobs(RunFolder(run_dir).features, jobs, config, size, block, progress=False)
    readout_seconds = time.perf_counter() - start
    n_readouts = sum(len(j.transfers) for j in jobs)
    print(f"(b) {', '.join(targets)}: stage II's {n_readouts} first-order readouts ({config.transfer.epochs} epochs) "
          f"{readout_seconds:8.2f} s   every estimator {estimate_seconds:6.2f} s   ratio "
          f"{estimate_seconds / readout_seconds:.2%}; with (a)'s all targets: {all_seconds / readout_seconds:.2%} "
          f"of these readouts alone")

if __name__ == "__main__":
    main()
