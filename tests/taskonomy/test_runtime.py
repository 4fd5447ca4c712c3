"""Thread caps: torch, Numba, Dask and an already-loaded BLAS follow one number."""

from __future__ import annotations

import dask
import numba
import numpy as np
import torch
from threadpoolctl import threadpool_info

from taskonomy.runtime import cap_threads, describe_device


def test_cap_threads_reaches_every_pool_including_a_loaded_blas():
    np.dot(np.ones((4, 4)), np.ones((4, 4)))  # NumPy's BLAS is loaded before the cap
    try:
        assert cap_threads(1) == 1
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
        assert dask.config.get("num_workers") == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
    finally:
        cap_threads(2)
    assert "threads" in describe_device("cpu", 2)
