"""Dask over the feature cache: chunk-aligned blocks of several feature arrays, read ahead of training.

    feed = FeatureFeed(features_root, ["normal/transfer", "pixels/transfer"])
    for block in feed.blocks(order):        # {path: float32 (n_block, C, h, w)}, next block already loading
        ...
    feed.wait_seconds                       # time the training loop spent waiting for data

Every array becomes a Dask array whose chunks are its Zarr chunks (no chunk is read twice for one block);
a block is the image range of one chunk of the array with the longest chunks (or a given length), so
every array of a source with that chunk length is read chunk by chunk. One background thread computes block
i+1 while the caller trains on block i.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
import zarr

from taskonomy import TaskonomyError

__all__ = ["FeatureFeed", "channel_stats"]


class FeatureFeed:
    """Blocks of several image-aligned feature arrays, as float32 NumPy arrays, prefetched."""

    def __init__(self, root: zarr.Group, paths: Sequence[str], block: int | None = None):
        missing = [p for p in paths if p not in root]
        if missing:
            raise TaskonomyError(f"features.zarr has no {missing[0]!r}; run `taskonomy extract` for this config")
        self.paths = list(paths)
        self.arrays = {p: da.from_zarr(root[p]) for p in self.paths}
        lengths = {a.shape[0] for a in self.arrays.values()}
        if len(lengths) != 1:
            raise TaskonomyError(f"features.zarr arrays {', '.join(self.paths)} disagree on the number of images "
                                 f"({sorted(lengths)}); rebuild them with `taskonomy extract --force`")
        self.n = lengths.pop()
        step = block or max(a.chunks[0][0] for a in self.arrays.values())
        self.bounds = [(lo, min(self.n, lo + step)) for lo in range(0, self.n, step)]
        self.wait_seconds = 0.0

    def _read(self, b: int) -> dict[str, np.ndarray]:
        lo, hi = self.bounds[b]
        # one synchronous compute per block: inside a dask.distributed worker this must not submit tasks
        parts = dask.compute(*(a[lo:hi] for a in self.arrays.values()), scheduler="synchronous")
        return {p: np.asarray(x, np.float32) for p, x in zip(self.paths, parts)}

    def blocks(self, order: Sequence[int] | None = None) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """(lo, hi, {path: block}) for the blocks in `order` (default: in order), one read ahead."""
        order = list(range(len(self.bounds)) if order is None else order)
        if not order:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="feature-prefetch") as pool:
            pending = pool.submit(self._read, order[0])
            for k, b in enumerate(order):
                start = time.perf_counter()
                block = pending.result()
                self.wait_seconds += time.perf_counter() - start
                if k + 1 < len(order):
                    pending = pool.submit(self._read, order[k + 1])
                yield (*self.bounds[b], block)


def channel_stats(root: zarr.Group, paths: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and std (float64) of each feature array, computed by Dask in one pass."""
    arrays = [da.from_zarr(root[p]).astype(np.float64) for p in paths]
    stats = dask.compute(*((a.mean(axis=(0, 2, 3)), a.std(axis=(0, 2, 3))) for a in arrays),
                         scheduler="synchronous")
    return {p: (np.asarray(m), np.where(np.asarray(s) > 1e-6, np.asarray(s), 1.0)) for p, (m, s) in zip(paths, stats)}
