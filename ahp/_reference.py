"""NumPy references of the stage III kernels: written independently of `_kernels.py`, used by the tests
as the oracle and by the benchmark as the baseline.

    python benchmarks/bench_ahp.py --quick      # Numba against these, side by side

`win_counts` is the fastest vectorised NumPy form found (one broadcast comparison per transfer against
all others, counted by packing the booleans into bytes and popcounting them: 1.9x faster than summing
the booleans at n=100, m=1e4); the eigenvectors come from numpy.linalg.eig, not from power iteration.
"""

from __future__ import annotations

import numpy as np

__all__ = ["consistency_index", "eig_eigenvectors", "power_iteration", "ratios", "weighted_win_counts",
           "win_counts"]

_CLIP = (0.001, 0.999)


def _count_true(mask: np.ndarray) -> np.ndarray:
    """Number of True along the last axis."""
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(np.packbits(mask, axis=-1)).sum(axis=-1, dtype=np.int64)
    return np.count_nonzero(mask, axis=-1)


def win_counts(losses: np.ndarray) -> np.ndarray:
    """(n, n) int64: counts[i, j] = images on which row i's loss is strictly lower than row j's."""
    losses = np.asarray(losses, dtype=np.float64)  # (n_transfers, n_images)
    counts = np.empty((losses.shape[0],) * 2, np.int64)
    for i, row in enumerate(losses):
        counts[i] = _count_true(row < losses)
    return counts


def weighted_win_counts(losses: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(r, n, n): counts[r, i, j] = sum of weights[r, k] over images k where row i beats row j."""
    losses = np.asarray(losses, dtype=np.float64)
    n = losses.shape[0]
    beats = (losses[:, None, :] < losses[None, :, :]).reshape(n * n, -1).astype(np.float64)
    return (np.asarray(weights, dtype=np.float64) @ beats.T).reshape(-1, n, n)


def ratios(win: np.ndarray) -> np.ndarray:
    """W' = clip(W, 0.001, 0.999) / its transpose, for one (n, n) or a stack (..., n, n)."""
    clipped = np.clip(win, *_CLIP)
    return clipped / np.swapaxes(clipped, -1, -2)


def eig_eigenvectors(win: np.ndarray) -> tuple[np.ndarray, float]:
    """(principal eigenvector of W' summing to 1, its eigenvalue), by numpy.linalg.eig."""
    values, vectors = np.linalg.eig(ratios(np.asarray(win, dtype=np.float64)))
    top = int(np.argmax(values.real))
    vector = np.abs(vectors[:, top].real)  # Perron vector of a positive matrix: one sign, real
    return vector / vector.sum(), float(values[top].real)


def power_iteration(win: np.ndarray, tol: float = 1e-12,
                    max_iter: int = 10_000) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The same iteration as the kernel for a stack (T, n, n) of equal-sized matrices, vectorised over T."""
    ratio = ratios(np.asarray(win, dtype=np.float64))  # (T, n, n)
    t_count, n = ratio.shape[:2]
    x = np.full((t_count, n), 1.0 / n)
    lam = np.zeros(t_count)
    iterations = np.zeros(t_count, np.int64)
    active = np.ones(t_count, bool)
    for it in range(1, max_iter + 1):
        y = np.einsum("tij,tj->ti", ratio[active], x[active])
        total = y.sum(axis=1)
        y /= total[:, None]
        done = np.abs(y - x[active]).sum(axis=1) < tol
        idx = np.flatnonzero(active)
        x[idx], lam[idx], iterations[idx] = y, total, it
        active[idx[done]] = False
        if not active.any():
            break
    return x, lam, iterations, ~active


def consistency_index(lambda_max: float, n: int) -> float:
    """Saaty's CI = (lambda_max - n) / (n - 1); 0 for n <= 2 (every such matrix is consistent)."""
    return 0.0 if n <= 2 else (lambda_max - n) / (n - 1)
