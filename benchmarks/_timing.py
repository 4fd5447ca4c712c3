"""Timing shared by the benchmark scripts (they run as `python benchmarks/<name>.py`, so this imports as `_timing`)."""

from __future__ import annotations

import time


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` wall-clock runs of fn(), in seconds (the least disturbed by other work)."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
