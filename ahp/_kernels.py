"""Numba kernels of stage III: tournament win counts and batched power iteration.

    from taskonomy.ahp.kernels import win_rates, ahp_eigenvectors   # the dispatch point; never call these directly

Losses are (n_transfers, n_images), row-major, so that one transfer's losses over a block of images are
contiguous and the loop over images vectorises. Every pair (i, j) is compared once and counted both ways
(i beats j, j beats i); ties count for neither. Counts are exact: int32 lanes within a block of images,
int64 across blocks; the bootstrap's weighted counts use float32 lanes only below 2**24, where float32
addition in any order is exact.
Each matrix of the power iteration is computed by one thread, so results do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

__all__ = ["CLIP_HIGH", "CLIP_LOW", "as_float32", "power_iteration", "weighted_win_counts", "win_counts"]

CLIP_LOW = 0.001  # the paper: W is clipped to [0.001, 0.999] before W' = W / W^T
CLIP_HIGH = 0.999

# Reassociation lets LLVM split float sums over SIMD lanes: the bootstrap's weighted counts are sums of
# small integers (exact in any order), the power iteration's of positive terms (the last bit may change).
_FASTMATH = {"reassoc", "nsz", "contract"}


@njit(parallel=True, cache=True)
def as_float32(losses):
    """(float32 copy, exact): exact when every loss is a float32 value, so comparisons keep their outcome."""
    n, m = losses.shape
    keys = np.empty((n, m), np.float32)
    inexact = 0
    for i in prange(n):
        row_inexact = 0
        for k in range(m):
            keys[i, k] = np.float32(losses[i, k])
            row_inexact += np.float64(keys[i, k]) != losses[i, k]
        inexact += row_inexact
    return keys, inexact == 0


def _as(value, zero):
    """`value` in the type of `zero`: keeps a sum in int32 lanes (float32 keys) or int64 (float64 keys)."""
    return value


@overload(_as, inline="always")
def _as_overload(value, zero):
    if zero == types.int32:
        return lambda value, zero: np.int32(value)
    return lambda value, zero: np.int64(value)


@njit(inline="always")
def _count_pair(a, b, zero):
    # narrow lanes: LLVM counts by subtracting the comparison masks (cmp + sub per vector of images)
    lt = zero
    gt = zero
    for k in range(a.size):
        lt = _as(lt + (a[k] < b[k]), zero)
        gt = _as(gt + (a[k] > b[k]), zero)
    return lt, gt


@njit(inline="always")
def _count_tile(a0, a1, b0, b1, zero):
    """Rows a0, a1 against rows b0, b1: each load serves two comparisons (1.4x over one row at a time)."""
    l00 = g00 = l01 = g01 = l10 = g10 = l11 = g11 = zero
    for k in range(a0.size):
        x = a0[k]
        y = a1[k]
        u = b0[k]
        v = b1[k]
        l00 = _as(l00 + (x < u), zero)
        g00 = _as(g00 + (x > u), zero)
        l01 = _as(l01 + (x < v), zero)
        g01 = _as(g01 + (x > v), zero)
        l10 = _as(l10 + (y < u), zero)
        g10 = _as(g10 + (y > u), zero)
        l11 = _as(l11 + (y < v), zero)
        g11 = _as(g11 + (y > v), zero)
    return l00, g00, l01, g01, l10, g10, l11, g11


@njit(cache=True)
def _add(counts, i, j, lt, gt):
    counts[i, j] += lt
    counts[j, i] += gt


@njit(cache=True)
def _count_rows(keys, counts, i, start, stop, block, zero):
    """Rows i and i+1 against each other and against every j > i+1 over images [start, stop), a block of
    images at a time (the two rows' blocks stay in L1)."""
    n = keys.shape[0]
    for s in range(start, stop, block):
        e = min(stop, s + block)
        a0 = keys[i, s:e]
        a1 = keys[i + 1, s:e]
        lt, gt = _count_pair(a0, a1, zero)
        _add(counts, i, i + 1, lt, gt)
        j = i + 2
        while j + 1 < n:
            l00, g00, l01, g01, l10, g10, l11, g11 = _count_tile(a0, a1, keys[j, s:e], keys[j + 1, s:e], zero)
            _add(counts, i, j, l00, g00)
            _add(counts, i, j + 1, l01, g01)
            _add(counts, i + 1, j, l10, g10)
            _add(counts, i + 1, j + 1, l11, g11)
            j += 2
        if j < n:
            lt, gt = _count_pair(a0, keys[j, s:e], zero)
            _add(counts, i, j, lt, gt)
            lt, gt = _count_pair(a1, keys[j, s:e], zero)
            _add(counts, i + 1, j, lt, gt)


@njit(parallel=True, cache=True)
def win_counts(keys, block, chunk, zero):
    """(n, n) int64: counts[i, j] = images on which transfer i has the strictly lower loss than j.

    keys: (n_transfers, n_images) float32 or float64; `zero` sets the lanes: np.int32(0) for float32 keys
    (8 per vector, block < 2**31 images), np.int64(0) for float64 keys (4, as wide as the keys). Rows go by
    pairs (0, 1), (2, 3), ...; with odd n the last row only meets the others as a j. Images go by chunks
    that fit the shared cache, every pair finishing a chunk before the next is read (else each row pair
    would stream all m images from memory again: 2.5x slower at m = 1e5). Row pairs are folded (q with
    the last-but-q) so that every parallel iteration compares the same number of pairs.
    """
    n, m = keys.shape
    counts = np.zeros((n, n), np.int64)
    pairs = n // 2
    for start in range(0, m, chunk):
        stop = min(m, start + chunk)
        for qq in prange((pairs + 1) // 2):
            q = np.int64(qq)
            _count_rows(keys, counts, 2 * q, start, stop, block, zero)
            if pairs - 1 - q != q:
                _count_rows(keys, counts, 2 * (pairs - 1 - q), start, stop, block, zero)
    return counts


@njit(inline="always", fastmath=_FASTMATH)
def _weighted_pair(a, b, w):
    zero = w[0] - w[0]
    lt = zero
    gt = zero
    for k in range(a.size):
        lt += w[k] if a[k] < b[k] else zero
        gt += w[k] if a[k] > b[k] else zero
    return lt, gt


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def weighted_win_counts(keys, weights, block):
    """(n_resamples, n, n): counts[r, i, j] = sum of weights[r, k] over images k where i beats j.

    A bootstrap resample is a multiplicity per image (weights[r], summing to n_images), so one pass over
    the losses per resample replaces building resampled copies. The accumulator has the weights' dtype.
    """
    n, m = keys.shape
    n_resamples = weights.shape[0]
    counts = np.zeros((n_resamples, n, n), weights.dtype)
    for r in prange(n_resamples):
        for s in range(0, m, block):
            e = min(m, s + block)
            w = weights[r, s:e]
            for i in range(n):
                a = keys[i, s:e]
                for j in range(i + 1, n):
                    lt, gt = _weighted_pair(a, keys[j, s:e], w)
                    counts[r, i, j] += lt
                    counts[r, j, i] += gt
    return counts


@njit(cache=True)
def _ratios(win):
    """W' = clip(W) / clip(W)^T (the paper's 'how many times better i is than j'); ones on the diagonal."""
    n = win.shape[0]
    ratio = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a = min(max(win[i, j], CLIP_LOW), CLIP_HIGH)
            b = min(max(win[j, i], CLIP_LOW), CLIP_HIGH)
            ratio[i, j] = a / b
    return ratio


@njit(cache=True, fastmath=_FASTMATH)
def _power(ratio, tol, max_iter, out):
    """x <- W'x / sum(W'x) from the uniform vector until the L1 change < tol.

    Writes x into `out`; returns (lambda_max, iterations, converged)."""
    n = ratio.shape[0]
    x = np.full(n, 1.0 / n)
    y = np.empty(n)
    lam = 0.0
    for it in range(1, max_iter + 1):  # noqa: B007 (returned: the iterations it took)
        lam = 0.0
        for i in range(n):
            s = 0.0
            for j in range(n):
                s += ratio[i, j] * x[j]
            y[i] = s
            lam += s  # sum(W'x) with sum(x) = 1: the eigenvalue once x has converged
        change = 0.0
        for i in range(n):
            y[i] /= lam
            change += abs(y[i] - x[i])
        for i in range(n):  # element loops, not `x[:] = y`: slice assignment adds 3 s to the first compile
            x[i] = y[i]
        if change < tol:
            break
    for i in range(n):
        out[i] = x[i]
    return lam, it, change < tol


@njit(parallel=True, cache=True)
def power_iteration(win, sizes, tol, max_iter):
    """Principal eigenvector of W' per matrix, batched: win (T, n_max, n_max) zero-padded, sizes (T,).

    Returns vectors (T, n_max) summing to 1 (zero past each size), lambda_max (T,), iterations (T,),
    converged (T,).
    """
    t_count, n_max = win.shape[0], win.shape[1]
    vectors = np.zeros((t_count, n_max))
    lam = np.zeros(t_count)
    iterations = np.zeros(t_count, np.int64)
    converged = np.zeros(t_count, np.bool_)
    for t in prange(t_count):
        n = sizes[t]
        ratio = _ratios(win[t, :n, :n])
        lam[t], iterations[t], converged[t] = _power(ratio, tol, max_iter, vectors[t])
    return vectors, lam, iterations, converged
