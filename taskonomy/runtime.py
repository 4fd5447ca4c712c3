"""One place that caps the threads of torch, Numba, Dask and the BLAS pools together.

Each library defaults to every core; on a 2-core machine three pools of 2 threads fight each other.
`cap_threads(n)` is called once by the CLI (from the config's `threads`) and by benchmarks and tests.
"""

from __future__ import annotations

import os

__all__ = ["cap_threads", "default_threads"]

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_threads() -> int:
    """Cores this process may use (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cap_threads(n: int | None = None) -> int:
    """Set torch, Numba, Dask and BLAS to `n` threads (default: the usable cores); returns n."""
    n = default_threads() if not n else max(1, min(int(n), default_threads()))
    for var in _BLAS_VARS:
        os.environ[var] = str(n)
    os.environ["NUMBA_NUM_THREADS"] = os.environ.get("NUMBA_NUM_THREADS", str(default_threads()))
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    import dask

    dask.config.set({"num_workers": n, "scheduler": "threads"})
    import torch

    torch.set_num_threads(n)
    return n
