"""One place that caps the threads of torch, Numba, Dask and the BLAS pools together.

Each library defaults to every core; on a 2-core machine three pools of 2 threads fight each other.
`cap_threads(n)` is called once by the CLI (from the config's `threads`) and by benchmarks and tests.
`numba_cache_dir(folder)` keeps Numba's on-disk cache working where the installed package is read-only.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["cap_threads", "cpu_name", "default_threads", "describe_device", "numba_cache_dir"]

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
    # the variables only reach a BLAS loaded after this point; NumPy's OpenBLAS is usually loaded already
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
    os.environ["NUMBA_NUM_THREADS"] = os.environ.get("NUMBA_NUM_THREADS", str(default_threads()))
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    import dask

    dask.config.set({"num_workers": n, "scheduler": "threads"})
    import torch

    torch.set_num_threads(n)
    return n


def _writable(folder: Path) -> bool:
    # the probe Numba itself makes: os.access says yes to root even on a read-only mount
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def numba_cache_dir(package_dir: str | Path) -> Path | None:
    """Where Numba caches the kernels of `package_dir`: None = beside the source (its __pycache__).

    Numba writes its cache next to the source file. Where that folder is read-only (a system-wide or
    container install), point NUMBA_CACHE_DIR at $XDG_CACHE_HOME/taskonomy/numba (~/.cache by default),
    else at the temp folder, so the compiled kernels are still loaded from disk on the next run instead of
    recompiled. Call it before the module with `cache=True` kernels is imported. A NUMBA_CACHE_DIR set by
    the user wins.
    """
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    if _writable(Path(package_dir) / "__pycache__"):
        return None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "taskonomy" / "numba"
    if not _writable(base):
        base = Path(tempfile.gettempdir()) / f"taskonomy-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"
    os.environ["NUMBA_CACHE_DIR"] = str(base)
    if "numba" in sys.modules:  # Numba reads the variable once, when it is first imported
        sys.modules["numba"].config.CACHE_DIR = str(base)
    return base


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what `platform` knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: str = "cpu", threads: int | None = None) -> str:
    """One line naming where a measurement ran, for benchmark output and run metadata."""
    if str(device).startswith("cuda"):
        import torch

        return f"GPU {torch.cuda.get_device_name()} (CPU {cpu_name()})"
    return f"CPU {cpu_name()}, {threads or default_threads()} threads"
