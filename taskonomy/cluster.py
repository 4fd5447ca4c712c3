"""Jobs on a dask.distributed cluster: the one way stage I, the feature cache and stage II reach one.

    taskonomy --config configs/paper.yaml run --scheduler tcp://HOST:8786   # or `scheduler:` in the config

    from taskonomy.cluster import run_remote, scheduler_of
    address = scheduler_of(config, "train")     # None: run in process (taskonomy.workers.run_jobs)
    results = run_remote(address, train_one, [(location, config_dict, task) for task in tasks],
                         names=tasks, done=save, gpu=wants_gpu(config.train.device))

Which scheduler: the top-level `scheduler` for every stage; for stage II `transfer.scheduler` first when it is set
(it came before the top-level key and keeps meaning what it meant). Neither changes a result or a stamp.

A job is a module-level function and plain arguments (a store's location as a string, the config as a dict), so a
worker opens the stores itself, wherever they live. Each job runs on one torch thread (`cap_threads(1)`), as the
in-process jobs do, so a job's result is the same bit for bit on a worker as in process on a CPU. Jobs are
submitted longest first (`cost`), and `done(index, result)` runs in the calling thread as each finishes: the
caller saves a checkpoint or records a source there, so a client killed midway keeps every finished job.

Failures: a worker that dies mid-job (killed, out of memory) has its job rerun on another worker by the scheduler,
up to its `distributed.scheduler.allowed-failures` deaths (default 3; set it where the scheduler is started), after
which the job fails in one line. A job that raises is retried `RETRIES` times (a flaky store read), except for a
TaskonomyError (bad input: the same on any worker), which is handed back at once and raised here in one line.
A job that wants a GPU (`wants_gpu`) is annotated `resources={"GPU": 1}` when some worker declares that resource
(`dask worker ... --resources GPU=1`), so it runs only on those workers; with none declared it runs anywhere.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from taskonomy import TaskonomyError

__all__ = ["CONNECT_TIMEOUT", "RETRIES", "connect", "require_distributed", "run_remote", "scheduler_of",
           "wants_gpu"]

CONNECT_TIMEOUT = "30s"  # how long the client tries to reach the scheduler before giving up
RETRIES = 2  # reruns of a job that raised (a worker's death is the scheduler's to count: allowed-failures)


def scheduler_of(config, stage: str) -> str | None:
    """The scheduler address `stage` runs on ('train', 'extract', 'transfer'), or None for in process."""
    if stage == "transfer" and config.transfer.scheduler:
        return config.transfer.scheduler
    return config.scheduler or None


def require_distributed(address: str | None) -> None:
    """A scheduler needs the optional distributed package: refused in one line before any work."""
    if address and importlib.util.find_spec("distributed") is None:
        raise TaskonomyError(f"scheduler {address} needs the distributed package: pip install -e '.[distributed]'")


def wants_gpu(device: str) -> bool:
    """A job of train.device `device` wants a GPU: 'cuda', or 'auto' (a worker with one uses it)."""
    return str(device) != "cpu"


@contextmanager
def connect(address: str) -> Iterator[Any]:
    """A distributed.Client of the scheduler at `address`; an unreachable one is one line."""
    require_distributed(address)
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise TaskonomyError(f"cannot reach the dask scheduler at {address} ({reason}); start one with "
                             f"`dask scheduler` and `dask worker {address}`, or run without a scheduler") from None
    try:
        yield client
    finally:
        client.close()


@dataclass(frozen=True)
class _Refused:
    """A job's TaskonomyError, returned rather than raised so that it is not retried (bad input stays bad)."""

    message: str


def _on_worker(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) on one torch thread, as the in-process jobs run (the same result bit for bit on a CPU)."""
    from taskonomy.runtime import cap_threads

    cap_threads(1)
    try:
        return fn(*args)
    except TaskonomyError as err:
        return _Refused(str(err))


def _gpu_resources(client: Any, gpu: bool) -> dict[str, float] | None:
    if not gpu:
        return None
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    declared = any(float((w.get("resources") or {}).get("GPU", 0)) >= 1 for w in workers.values())
    return {"GPU": 1} if declared else None


def run_remote(address: str, fn: Callable[..., Any], jobs: Sequence[tuple], names: Sequence[str] | None = None,
               cost: Callable[[int], float] | None = None, done: Callable[[int, Any], Any] | None = None,
               gpu: bool = False, desc: str | None = None) -> list[Any]:
    """fn(*job) for every job on the cluster at `address`; results in the order of `jobs`.

    `names`: one per job, shown in the scheduler's task keys and in errors; `cost(index)`: relative work (longest
    first); `done(index, result)` as each finishes, in this thread; `gpu`: the jobs want a GPU (wants_gpu);
    `desc`: one progress bar of the jobs finished.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker
    from tqdm import tqdm

    jobs = list(jobs)
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(jobs))]
    if not jobs:
        return []
    order = sorted(range(len(jobs)), key=lambda i: -cost(i)) if cost else list(range(len(jobs)))
    results: list[Any] = [None] * len(jobs)
    tag = f"{getattr(fn, '__name__', 'job').strip('_')}-{uuid.uuid4().hex[:8]}"
    with connect(address) as client:
        resources = _gpu_resources(client, gpu)
        futures, index = [], {}
        for rank, i in enumerate(order):  # priority: higher runs first
            futures.append(client.submit(_on_worker, fn, *jobs[i], key=f"{tag}-{names[i]}", pure=False,
                                         retries=RETRIES, resources=resources, priority=len(order) - rank))
            index[futures[-1].key] = i
        with tqdm(total=len(jobs), desc=desc, unit="job", disable=desc is None) as bar:
            try:
                for future in as_completed(futures):
                    i = index[future.key]
                    try:
                        value = future.result()
                    except KilledWorker as err:
                        raise TaskonomyError(f"job {names[i]} killed its worker on every try (the scheduler's "
                                             f"distributed.scheduler.allowed-failures): {err}") from None
                    if isinstance(value, _Refused):
                        raise TaskonomyError(value.message)
                    results[i] = value
                    if done:
                        done(i, value)
                    bar.update()
            finally:
                client.cancel([f for f in futures if not f.done()])
    return results

