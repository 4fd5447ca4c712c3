"""Stage III: ordinal normalisation of the transfers' test losses into affinities (AHP).

    taskonomy --config configs/tiny.yaml ahp      # transfers.zarr -> affinity.csv, heatmaps, intervals

Kernels (`kernels.py`, Numba with NumPy references) import no torch, Zarr or Dask; `stage.py` does the I/O.
"""

from __future__ import annotations

from pathlib import Path

from taskonomy.runtime import numba_cache_dir

# before any module with cache=True kernels is imported: a read-only install caches them in the user's folder
numba_cache_dir(Path(__file__).parent)

__all__: list[str] = []
