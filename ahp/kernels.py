"""Stage III arithmetic, arrays in and arrays out: the one dispatch point between Numba and NumPy.

    from taskonomy.ahp.kernels import affinities
    result = affinities([losses_of_target_a, losses_of_target_b])   # each (n_transfers, n_images)

Per target t, over its transfers: W[i, j] = the fraction of test images on which transfer i has the
strictly lower loss than j (ties count for neither); W' = clip(W, 0.001, 0.999) / clip(W, ...)^T; the
affinities are W's principal eigenvector, summing to 1 (power iteration). Losses are checked here, at the
edge: the kernels assume finite input. `backend="numpy"` runs the references the tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from taskonomy import TaskonomyError
from taskonomy.ahp import _kernels, _reference

__all__ = [
    "AhpResult", "BootstrapResult", "affinities", "ahp_eigenvectors", "bootstrap", "check_losses",
    "consistency_ratio", "random_index", "resample_weights", "win_rates",
]

Backend = Literal["numba", "numpy"]
TOL = 1e-12
MAX_ITER = 10_000
_F32_EXACT = 2**24  # float32 holds every integer below this exactly
_BLOCK_BYTES = 2**14
_CHUNK_BYTES = 2**22  # images per chunk: all rows of a chunk share the L3 cache (16 MB here) with room to spare
_PARALLEL_WORK = 4e6  # comparisons (or multiply-adds) below which one thread finishes first: ~0.3 ms of work

# Saaty's random index: the mean consistency index of random reciprocal matrices of order n (Saaty 1980).
_SAATY_RI = (0.0, 0.0, 0.0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49, 1.51, 1.48, 1.56, 1.57, 1.59)


@dataclass(frozen=True)
class AhpResult:
    """One entry per target: the affinity vector (sums to 1), W's largest eigenvalue, iterations, converged."""

    vectors: list[np.ndarray]
    lambda_max: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray

    @property
    def consistency_ratio(self) -> np.ndarray:
        return np.array([consistency_ratio(lam, len(v)) for lam, v in zip(self.lambda_max, self.vectors)])


@dataclass(frozen=True)
class BootstrapResult:
    """Affinities of one target over resampled test images: samples (r, n), the interval per transfer,
    and how often the point estimate's top candidate stays on top."""

    samples: np.ndarray
    low: np.ndarray
    high: np.ndarray
    top: int
    top_stability: float
    unconverged: int


def check_losses(losses: np.ndarray, target: str = "?", transfers: Sequence[str] | None = None) -> np.ndarray:
    """(n_transfers, n_images) float64, C-contiguous; NaN/inf or a bad shape -> TaskonomyError naming the row."""
    losses = np.ascontiguousarray(losses, dtype=np.float64)
    if losses.ndim != 2 or 0 in losses.shape:
        raise TaskonomyError(f"target {target}: expected losses of shape (n_transfers, n_images) with both > 0, "
                             f"got {losses.shape}")
    if transfers is not None and len(transfers) != losses.shape[0]:
        raise TaskonomyError(f"target {target}: {len(transfers)} transfer names for {losses.shape[0]} rows of losses")
    bad = ~np.isfinite(losses)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        name = transfers[row] if transfers is not None else f"#{row}"
        raise TaskonomyError(f"target {target}: transfer {name} has NaN/inf test losses "
                             f"({int(bad[row].sum())} of {losses.shape[1]} images); rerun `taskonomy transfer`")
    return losses


def _block(itemsize: int) -> int:
    # 16 KB of one row per block: the compared row stays in L1; larger or L2-sized blocks measured no faster
    return _BLOCK_BYTES // itemsize


@contextmanager
def _threads_for(work: float) -> Iterator[None]:
    """Run small kernels on one thread: waking the pool costs more than it saves, and on a machine where
    another process holds a core it costs a scheduler tick (~30 ms measured with the OpenMP layer)."""
    if work >= _PARALLEL_WORK:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _keys(losses: np.ndarray) -> np.ndarray:
    """Comparable keys: float32 when every loss is a float32 value (losses of float32 networks are), which
    doubles the SIMD lanes and keeps every comparison's outcome; else the float64 losses."""
    with _threads_for(4 * losses.size):  # a conversion costs about four comparisons
        keys, exact = _kernels.as_float32(losses)
    return keys if exact else losses


def _win_rates_one(losses: np.ndarray, backend: Backend) -> np.ndarray:
    m = losses.shape[1]
    if backend == "numpy":
        return _reference.win_counts(losses) / m
    keys = _keys(losses)
    with _threads_for(len(keys) ** 2 * m):
        block = _block(keys.itemsize)
        chunk = max(1, _CHUNK_BYTES // (len(keys) * keys.itemsize * block)) * block
        zero = np.int32(0) if keys.dtype == np.float32 else np.int64(0)
        return _kernels.win_counts(keys, block, chunk, zero) / m


def win_rates(losses: np.ndarray | Sequence[np.ndarray], backend: Backend = "numba") -> np.ndarray | list[np.ndarray]:
    """W per target: one (n, m) array -> (n, n); a list (targets may differ in n and m) -> a list."""
    if isinstance(losses, np.ndarray) and losses.ndim == 2:
        return _win_rates_one(check_losses(losses), backend)
    return [_win_rates_one(check_losses(one, f"#{t}"), backend) for t, one in enumerate(losses)]


def _check_win(win: np.ndarray, t: int) -> np.ndarray:
    win = np.ascontiguousarray(win, dtype=np.float64)
    if win.ndim != 2 or win.shape[0] != win.shape[1] or win.shape[0] == 0:
        raise TaskonomyError(f"target #{t}: expected a square win-rate matrix, got shape {win.shape}")
    if not (np.all(win >= 0) and np.all(win <= 1)):  # also refuses NaN
        raise TaskonomyError(f"target #{t}: win rates must lie in [0, 1]")
    return win


def ahp_eigenvectors(win: np.ndarray | Sequence[np.ndarray], tol: float = TOL, max_iter: int = MAX_ITER,
                     backend: Backend = "numba") -> AhpResult:
    """Principal eigenvectors of W' for one (n, n) matrix or a batch (a list, or a (T, n, n) stack)."""
    mats = [win] if isinstance(win, np.ndarray) and win.ndim == 2 else list(win)
    mats = [_check_win(w, t) for t, w in enumerate(mats)]
    if not mats or not tol > 0 or max_iter < 1:
        raise TaskonomyError(f"ahp: expected at least one matrix, tolerance > 0 and max_iter >= 1, got "
                             f"{len(mats)}, {tol} and {max_iter}")
    sizes = np.array([len(w) for w in mats], np.int64)
    if backend == "numpy":
        return _numpy_eigenvectors(mats, sizes, tol, max_iter)
    padded = np.zeros((len(mats), sizes.max(), sizes.max()))  # one kernel call for all targets
    for t, w in enumerate(mats):
        padded[t, :len(w), :len(w)] = w
    with _threads_for(30 * float((sizes**2).sum())):  # ~30 iterations is typical
        vectors, lam, iterations, converged = _kernels.power_iteration(padded, sizes, float(tol), int(max_iter))
    return AhpResult([vectors[t, :n].copy() for t, n in enumerate(sizes)], lam, iterations, converged)


def _numpy_eigenvectors(mats: list[np.ndarray], sizes: np.ndarray, tol: float, max_iter: int) -> AhpResult:
    vectors: list[np.ndarray] = [np.empty(0)] * len(mats)
    lam = np.zeros(len(mats))
    iterations = np.zeros(len(mats), np.int64)
    converged = np.zeros(len(mats), bool)
    for n in np.unique(sizes):  # the reference vectorises over matrices of one size
        idx = np.flatnonzero(sizes == n)
        x, lam[idx], iterations[idx], converged[idx] = _reference.power_iteration(
            np.stack([mats[t] for t in idx]), tol, max_iter)
        for row, t in enumerate(idx):
            vectors[t] = x[row]
    return AhpResult(vectors, lam, iterations, converged)


def affinities(losses: np.ndarray | Sequence[np.ndarray], tol: float = TOL, max_iter: int = MAX_ITER,
               backend: Backend = "numba") -> AhpResult:
    """Losses per target -> win rates -> AHP affinity vectors (one per target)."""
    win = win_rates(losses, backend)
    return ahp_eigenvectors(win if isinstance(win, list) else [win], tol, max_iter, backend)


def random_index(n: int) -> float:
    """Saaty's random index for order n; past 15, Alonso & Lamata's fit (2006), RI = (1.7699 n - 4.3513) / (n - 1),
    which gives 1.585 at n = 15 (Saaty: 1.59) and tends to 1.77."""
    if n < len(_SAATY_RI):
        return _SAATY_RI[n]
    return (1.7699 * n - 4.3513) / (n - 1)


def consistency_ratio(lambda_max: float, n: int) -> float:
    """Saaty's CR = CI / RI with CI = (lambda_max - n) / (n - 1); 0 for n <= 2. Below 0.1 counts as consistent
    on Saaty's 1-9 scale; W' spans 1/999-999, so read it as a relative figure across targets."""
    if n <= 2:
        return 0.0
    return _reference.consistency_index(float(lambda_max), n) / random_index(n)


def resample_weights(n_images: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_images) int64: how often each test image is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_images, size=(resamples, n_images))
    flat = draws + (np.arange(resamples) * n_images)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n_images).reshape(resamples, n_images)


def bootstrap(losses: np.ndarray, resamples: int, confidence: float = 0.95, seed: int = 0,
              candidates: np.ndarray | None = None, tol: float = TOL, max_iter: int = MAX_ITER,
              backend: Backend = "numba") -> BootstrapResult:
    """Percentile intervals of one target's affinities over test images drawn with replacement, and the
    share of resamples whose top transfer among `candidates` (a bool mask; default all) is the point one."""
    losses = check_losses(losses)
    n, m = losses.shape
    if resamples < 1 or not 0 < confidence < 1:
        raise TaskonomyError(f"bootstrap: expected resamples >= 1 and 0 < confidence < 1, "
                             f"got {resamples} and {confidence}")
    candidates = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    if candidates.shape != (n,) or not candidates.any():
        raise TaskonomyError(f"bootstrap: expected a mask of {n} candidates with at least one set")
    point = affinities(losses, tol, max_iter, backend).vectors[0]
    weights = resample_weights(m, resamples, seed)
    keys = _keys(losses) if backend == "numba" else losses
    wdtype = np.float32 if keys.dtype == np.float32 and m < _F32_EXACT else np.float64
    samples = np.empty((resamples, n))
    unconverged = 0
    step = max(1, 2**24 // (n * n))  # resamples per call: (step, n, n) counts stay under ~128 MB
    for start in range(0, resamples, step):
        w = weights[start:start + step]
        if backend == "numpy":
            win = _reference.weighted_win_counts(losses, w) / m
        else:
            with _threads_for(len(w) * n * n * m):
                win = _kernels.weighted_win_counts(keys, w.astype(wdtype), _block(keys.itemsize)) / m
        result = ahp_eigenvectors(win, tol, max_iter, backend)
        samples[start:start + len(w)] = np.stack(result.vectors)
        unconverged += int((~result.converged).sum())
    low, high = np.quantile(samples, [(1 - confidence) / 2, (1 + confidence) / 2], axis=0)
    index = np.flatnonzero(candidates)
    top = int(index[np.argmax(point[index])])
    stability = float(np.mean(index[np.argmax(samples[:, index], axis=1)] == top))
    return BootstrapResult(samples, low, high, top, stability, unconverged)
