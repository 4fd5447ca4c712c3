"""Numba k-means and segment means per image, each with a NumPy reference that the tests compare it to.

Arrays are channel-major, (F, B, N): F features (or channels) of B images of N pixels, so that a slice of
channels of the label generator's per-pixel array is contiguous without a copy. `prange` runs over the
images only; each image is computed sequentially by one thread, so its labels do not depend on the
batch it came in or on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["kmeans", "kmeans_reference", "paint", "segment_means", "segment_means_reference"]


@njit(cache=True)
def _distances(x, b, centre, w, d):
    """Weighted squared distances (N,) of image b's pixels of x (F, B, N) to one centre (F,)."""
    d[:] = 0.0
    for j in range(x.shape[0]):
        cj, wj, row = centre[j], w[j], x[j, b]
        for i in range(x.shape[2]):  # pixel loop innermost: it vectorises
            e = row[i] - cj
            d[i] += wj * e * e


@njit(cache=True)
def _maximin_init(x, b, w, centres, best, d):
    """Deterministic seeds: the pixel farthest from the mean, then each time the pixel farthest from all
    seeds so far (ties to the lowest index)."""
    f, n = x.shape[0], x.shape[2]
    mean = np.empty(f, np.float32)
    for j in range(f):
        acc = 0.0
        for i in range(n):
            acc += x[j, b, i]
        mean[j] = acc / n
    _distances(x, b, mean, w, best)
    for c in range(centres.shape[0]):
        arg = 0
        for i in range(1, n):
            if best[i] > best[arg]:
                arg = i
        for j in range(f):
            centres[c, j] = x[j, b, arg]
        _distances(x, b, centres[c], w, d)
        if c == 0:
            best[:] = d  # the distances to the mean only chose the first seed
        else:
            for i in range(n):
                best[i] = min(best[i], d[i])


@njit(cache=True)
def _assign(x, b, w, centres, labels, best, d):
    """Nearest centre of each of image b's pixels into `labels` (N,); returns how many labels changed."""
    n = x.shape[2]
    best[:] = np.inf
    old = labels.copy()
    for c in range(centres.shape[0]):
        _distances(x, b, centres[c], w, d)
        cc = np.int32(c)
        for i in range(n):  # selects, not branches: 3x faster
            better = d[i] < best[i]
            best[i] = d[i] if better else best[i]
            labels[i] = cc if better else labels[i]
    changed = 0
    for i in range(n):
        changed += labels[i] != old[i]
    return changed


@njit(cache=True)
def _update(x, b, centres, labels):
    """Each centre to the mean of its pixels of image b (an empty cluster keeps its centre).

    Four interleaved sets of sums: runs of one label would otherwise chain every add on the previous
    one through memory (3.5x slower on images, whose labels come in runs).
    """
    k, f, n = centres.shape[0], x.shape[0], x.shape[2]
    counts, acc = np.zeros(4 * k), np.empty(4 * k)
    for i in range(n):
        counts[(i & 3) * k + labels[i]] += 1.0
    for j in range(f):
        row = x[j, b]
        acc[:] = 0.0
        for i in range(n):
            acc[(i & 3) * k + labels[i]] += row[i]
        for c in range(k):
            count = (counts[c] + counts[k + c]) + (counts[2 * k + c] + counts[3 * k + c])
            if count > 0:
                centres[c, j] = ((acc[c] + acc[k + c]) + (acc[2 * k + c] + acc[3 * k + c])) / count


@njit(parallel=True, cache=True)
def kmeans(fit, x, weights, k, iters):
    """Lloyd's k-means per image under the distance sum_f weights_f (a_f - b_f)^2, fitted on `fit`
    (F, B, M) and applied to `x` (F, B, N), both float32.

    Maximin seeding and at most `iters` assign/update rounds on `fit` (a subsample of the pixels keeps
    this cheap; rounds stop once no label changes, which gives the same result as running them all),
    then every pixel of `x` goes to its nearest centre. Returns labels (B, N) int32.
    """
    f, nb, m = fit.shape
    n = x.shape[2]
    w = weights.astype(np.float32)
    labels = np.zeros((nb, n), np.int32)
    for b in prange(nb):
        centres = np.empty((k, f), np.float32)
        best, d, lf = np.empty(max(m, n), np.float32), np.empty(max(m, n), np.float32), np.full(m, -1, np.int32)
        _maximin_init(fit, b, w, centres, best[:m], d[:m])
        for _ in range(iters):
            if _assign(fit, b, w, centres, lf, best[:m], d[:m]) == 0:
                break  # converged: more rounds would change nothing
            _update(fit, b, centres, lf)
        _assign(x, b, w, centres, labels[b], best[:n], d[:n])
    return labels


def kmeans_reference(fit: np.ndarray, x: np.ndarray, weights: np.ndarray, k: int, iters: int) -> np.ndarray:
    """NumPy reference of `kmeans` (same seeding and updates, float64)."""
    w = np.asarray(weights, np.float64)
    labels = np.empty(x.shape[1:], np.int32)

    def nearest(points, centres):
        return np.argmin((w * (points[:, None, :] - centres[None]) ** 2).sum(2), axis=1)

    for b in range(fit.shape[1]):
        xb = fit[:, b].T.astype(np.float64)  # (M, F)
        best = (w * (xb - xb.mean(0)) ** 2).sum(1)
        seeds = []
        for c in range(k):
            seeds.append(int(np.argmax(best)))
            d = (w * (xb - xb[seeds[-1]]) ** 2).sum(1)
            best = d if c == 0 else np.minimum(best, d)
        centres = xb[seeds].copy()
        for _ in range(iters):
            lb = nearest(xb, centres)
            for c in range(k):
                if np.any(lb == c):
                    centres[c] = xb[lb == c].mean(0)
        labels[b] = nearest(x[:, b].T.astype(np.float64), centres)
    return labels


@njit(parallel=True, cache=True)
def segment_means(labels, values, k):
    """Mean (B, k, C) float32 of `values` (C, B, N) over each image's segments, labels (B, N) in [0, k);
    a segment without pixels gets 0."""
    c, nb, n = values.shape
    means = np.zeros((nb, k, c), np.float32)
    for b in prange(nb):
        _update(values, b, means[b], labels[b])
    return means


def segment_means_reference(labels: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """NumPy reference of `segment_means`."""
    c, nb, n = values.shape
    flat = (labels + k * np.arange(nb)[:, None]).ravel()
    counts = np.maximum(np.bincount(flat, minlength=nb * k), 1)
    means = np.stack([np.bincount(flat, values[j].ravel().astype(np.float64), nb * k) / counts for j in range(c)])
    return means.T.reshape(nb, k, c).astype(np.float32)


@njit(parallel=True, cache=True)
def paint(labels, means):
    """Each pixel's segment value: labels (B, N), means (B, k, C) -> (C, B, N) float32."""
    nb, n = labels.shape
    c = means.shape[2]
    out = np.empty((c, nb, n), np.float32)
    for b in prange(nb):
        lb = labels[b]
        for j in range(c):
            dst = out[j, b]
            for i in range(n):
                dst[i] = means[b, lb[i], j]
    return out
