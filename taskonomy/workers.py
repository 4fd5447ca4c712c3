"""Independent training jobs side by side: one job per core, each on one torch thread.

    from taskonomy.workers import run_jobs
    results = run_jobs(train_one, tasks, workers=2, cost=estimate, done=save)   # results in the order of `tasks`

The networks of stage I and II are small (32 px images, widths 16-64): on a CPU one such network uses a
second core poorly (one stage I network: 546 images/s on one thread, 661 on two), while two networks trained
at once on one thread each do 2x the work of one on two threads. So on a CPU every job runs on one intra-op
thread and `workers` jobs run at once (Python threads: torch releases the GIL inside its ops, the jobs share
the data in memory, and nothing is pickled or spawned). One thread per job also makes the results independent
of the core count: oneDNN's sums differ in the last bit between 1 and 2 threads, so with a thread count that
followed the cores a 2-core and a 16-core machine would train different weights from the same seed.

Jobs are started longest first (`cost`), which keeps the last worker from finishing alone; `done(index,
result)` runs in the calling thread as each job finishes (save a checkpoint there: a run killed midway keeps
every finished job). The worker threads are daemons: Ctrl-C stops the caller at once instead of waiting for
the running jobs. The first job that raises stops the others from starting and is re-raised.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["job_threads", "job_workers", "run_jobs", "seeded"]

T = TypeVar("T")
R = TypeVar("R")

_SEED_LOCK = threading.RLock()


@contextmanager
def seeded(seed: int):
    """torch's global generator seeded to `seed` for this thread alone until the block ends (a network's
    default initialisation draws from it: two jobs building networks at once would interleave draws)."""
    import torch

    with _SEED_LOCK:
        torch.manual_seed(seed)
        yield


def job_workers(threads: int | None, device: Any = "cpu") -> int:
    """Jobs at once: one per core allowed (`threads`, default every core) on a CPU; one on a GPU."""
    from taskonomy.runtime import default_threads

    if getattr(device, "type", str(device)) != "cpu":
        return 1
    return max(1, min(threads or default_threads(), default_threads()))


@contextmanager
def job_threads(n: int = 1):
    """torch's intra-op threads set to `n` for a block of training (restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_jobs(fn: Callable[[T], R], jobs: Sequence[T], workers: int = 1,
             cost: Callable[[T], float] | None = None,
             done: Callable[[int, R], Any] | None = None, desc: str | None = None) -> list[R]:
    """fn(job) for every job, `workers` at a time on one torch thread each; results in the order of `jobs`.

    `desc`: show one bar of the jobs finished under that name while several run at once (each job's own
    progress bar is then the caller's to switch off: their lines would interleave).
    """
    from tqdm import tqdm

    jobs = list(jobs)
    order = sorted(range(len(jobs)), key=lambda i: -cost(jobs[i])) if cost else list(range(len(jobs)))
    results: list[Any] = [None] * len(jobs)
    workers = max(1, min(int(workers), len(jobs)))
    bar = tqdm(total=len(jobs), desc=desc, unit="job", disable=desc is None or workers == 1)

    def finish(i: int, value: Any) -> None:
        results[i] = value
        if done:
            done(i, value)
        bar.update()

    with job_threads(1), bar:
        if workers == 1:
            for i in order:
                finish(i, fn(jobs[i]))
            return results
        todo: queue.Queue[int] = queue.Queue()
        for i in order:
            todo.put(i)
        finished: queue.Queue[tuple[int, bool, Any]] = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    finished.put((i, True, fn(jobs[i])))
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread, re-raised there
                    finished.put((i, False, error))

        threads = [threading.Thread(target=work, name=f"taskonomy-job-{k}", daemon=True) for k in range(workers)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(len(jobs)):
                i, ok, value = finished.get()
                if not ok:
                    raise value
                finish(i, value)
        finally:
            stop.set()
    return results
