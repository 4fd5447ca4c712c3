"""Kernels of the transferability estimators, arrays in and numbers out: pooling, the five estimators' arithmetic,
and LogME's fixed point over (alpha, beta) in Numba.

    from taskonomy.transfer.estimate import logme, hscore, ...   # estimate.py re-exports them; logme() is the one
                                                                 # dispatch point between Numba and its reference

Per label column y (You et al. 2021, Algorithm 1): with the SVD of the features F = U S V^T, s2 = S^2 (the k
nonzero eigenvalues of F^T F), z = U^T y and `outside` = |y|^2 - |z|^2 (the part of y that F cannot reach), the
posterior mean m of the Bayesian linear model y ~ N(F w, 1/beta), w ~ N(0, 1/alpha) has, with t = alpha / beta,
|m|^2 = sum s2 z^2 / (t + s2)^2 and |F m - y|^2 = sum z^2 t^2 / (t + s2)^2 + outside. MacKay's updates
alpha = gamma / |m|^2, beta = (n - gamma) / |F m - y|^2, gamma = sum s2 / (t + s2), repeat until t or the
evidence settles; the evidence there, divided by n, is the column's LogME. Each column is one thread's work:
the result does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from taskonomy.tasks import Task

__all__ = ["CLIP_SIGMA", "FEATURE_GRID", "LABEL_GRID", "evidence", "fixed_point", "hscore", "kmeans", "label_matrix",
           "logme_columns", "parc", "pool_features", "rdm_upper", "ridge", "rsa", "standardise", "svd_of", "whitening",
           "zscore"]

FEATURE_GRID = 2  # features average-pooled to 2 x 2 cells
LABEL_GRID = 4  # dense labels average-pooled to 4 x 4 cells
CLIP_SIGMA = 5.0  # as stage II's readouts (transfer.train.CLIP_SIGMA)
RIDGE_PENALTY = 10.0

_TINY = 1e-12


@njit(cache=True)
def evidence(s2, z, outside, n, dim, alpha, beta):
    """log p(y | alpha, beta) / n of the Bayesian linear model, from the SVD quantities."""
    t = alpha / beta
    # log|A| of A = alpha I_dim + beta F^T F: the k nonzero eigenvalues, and alpha for the other dim - k
    logdet = (dim - s2.shape[0]) * math.log(alpha)
    m2, res2 = 0.0, outside
    for i in range(s2.shape[0]):
        d = t + s2[i]
        logdet += math.log(alpha + beta * s2[i])
        m2 += s2[i] * z[i] * z[i] / (d * d)
        res2 += z[i] * z[i] * t * t / (d * d)
    return 0.5 * (dim * math.log(alpha) + n * math.log(beta) - beta * res2 - alpha * m2 - logdet
                  - n * math.log(2.0 * math.pi)) / n


@njit(cache=True)
def fixed_point(s2, z, outside, n, dim, tol, max_iter):
    """(LogME, alpha, beta) of one column: MacKay's updates from alpha = beta = 1 until alpha / beta changes by less
    than tol relatively, or the evidence by less than tol (a column the features cannot explain drifts towards
    alpha -> infinity, w = 0, where the evidence's supremum lies, ever more slowly)."""
    alpha, beta = 1.0, 1.0
    last = evidence(s2, z, outside, n, dim, alpha, beta)
    for _ in range(max_iter):
        t = alpha / beta
        gamma, m2, res2 = 0.0, 0.0, outside
        for i in range(s2.shape[0]):
            d = t + s2[i]
            gamma += s2[i] / d
            m2 += s2[i] * z[i] * z[i] / (d * d)
            res2 += z[i] * z[i] * t * t / (d * d)
        alpha = gamma / max(m2, _TINY)
        beta = (n - gamma) / max(res2, _TINY)
        now = evidence(s2, z, outside, n, dim, alpha, beta)
        if abs(alpha / beta - t) <= tol * t or abs(now - last) <= tol:
            return now, alpha, beta
        last = now
    return last, alpha, beta


@njit(cache=True)
def logme_columns(s2, z, outside, n, dim, tol, max_iter):
    """LogME of every label column: s2 (k,), z (k, m) = U^T Y, outside (m,); returns (m,) float64."""
    out = np.empty(z.shape[1])
    for j in range(z.shape[1]):
        out[j] = fixed_point(s2, np.ascontiguousarray(z[:, j]), outside[j], n, dim, tol, max_iter)[0]
    return out


def pool_features(block: np.ndarray, grid: int = FEATURE_GRID) -> np.ndarray:
    """(n, C, h, w) features -> (n, C * grid * grid) float64, adaptive average pooling."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
    return F.adaptive_avg_pool2d(x, grid).flatten(1).double().numpy()


def standardise(x: np.ndarray, clip: float | None = CLIP_SIGMA) -> np.ndarray:
    """Columns z-scored (a constant column becomes 0), clipped at +-clip sigma."""
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > 1e-8, std, 1.0)
    return np.clip(z, -clip, clip) if clip else z


def label_matrix(task: Task, labels: np.ndarray, grid: int = LABEL_GRID) -> np.ndarray:
    """One image's label as a row of numbers (n, m): dense maps pooled to grid x grid (class maps as class shares
    per cell), class indices one-hot, vectors as stored."""
    import torch
    import torch.nn.functional as F

    y = np.asarray(labels)
    classes = (task.num_classes or int(y.max()) + 1) if y.dtype.kind in "iu" else 0
    if y.dtype.kind in "iu" and y.ndim == 3:  # (n, H, W) class per pixel -> (n, K, H, W) indicator maps
        y = np.moveaxis(np.eye(classes, dtype=np.float32)[y], -1, 1)
    elif y.dtype.kind in "iu" and y.ndim == 1:
        return np.eye(classes)[y]
    if y.ndim == 4:
        return F.adaptive_avg_pool2d(torch.from_numpy(y.astype(np.float32)), grid).flatten(1).double().numpy()
    return y.reshape(len(y), -1).astype(np.float64)


def kmeans(y: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Cluster ids (n,) of Lloyd's k-means with k-means++ seeding (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    k = min(k, len(y))
    centres = [y[rng.integers(len(y))]]
    for _ in range(1, k):
        d2 = np.min([((y - c) ** 2).sum(1) for c in centres], axis=0)
        if d2.sum() <= 0:
            break
        centres.append(y[rng.choice(len(y), p=d2 / d2.sum())])
    c = np.array(centres)
    ids = np.zeros(len(y), np.int64)
    for _ in range(iterations):
        ids_new = (((y[:, None, :] - c[None]) ** 2).sum(2)).argmin(1)
        if _ and np.array_equal(ids_new, ids):
            break
        ids = ids_new
        c = np.array([y[ids == j].mean(0) if np.any(ids == j) else c[j] for j in range(len(c))])
    return ids


def svd_of(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(U (n, k), S^2 (k,), d) of features x (n, d), the k singular values above 1e-10 of the largest."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    return u[:, keep], s[keep] ** 2, x.shape[1]


def whitening(x: np.ndarray) -> np.ndarray:
    """(d, k) W with W W^T = cov(x)^+ (the k eigenvalues above 1e-10 of the largest)."""
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(xc.T @ xc / len(x))
    keep = w > w.max(initial=0.0) * 1e-10
    return v[:, keep] / np.sqrt(w[keep])


def hscore(x: np.ndarray, classes: np.ndarray, whiten: np.ndarray | None = None) -> float:
    """H-score: sum over classes y of p(y) (g_y - mu)^T cov(f)^+ (g_y - mu), with g_y the class mean (`whiten`:
    whitening(x), when the caller has it)."""
    xc = x - x.mean(0)
    whiten = whitening(x) if whiten is None else whiten
    ids, counts = np.unique(classes, return_inverse=True, return_counts=True)[1:]
    sums = np.zeros((len(counts), x.shape[1]))
    np.add.at(sums, ids, xc)
    means = sums / counts[:, None]  # (classes, d), centred
    return float((counts / len(x) * ((means @ whiten) ** 2).sum(1)).sum())


def rdm_upper(x: np.ndarray) -> np.ndarray:
    """The upper triangle (k > 0) of the RDM of the rows of x: 1 - Pearson correlation between images."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    t = t - t.mean(1, keepdim=True)
    t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a constant row correlates 0 with everything
    i, j = torch.triu_indices(len(t), len(t), 1)
    return (1.0 - (t @ t.T))[i, j].numpy()


def zscore(v: np.ndarray) -> np.ndarray:
    """v less its mean over its standard deviation (a constant v: zeros), so a mean of products is a Pearson r."""
    std = v.std()
    return (v - v.mean()) / std if std > 0 else np.zeros_like(v)


def rsa(rdm_a: np.ndarray, rdm_b: np.ndarray) -> float:
    """Spearman correlation of two RDMs' upper triangles (ties at their mean rank)."""
    from scipy.stats import rankdata

    return float(np.mean(zscore(rankdata(rdm_a)) * zscore(rankdata(rdm_b))))


def parc(rdm_features: np.ndarray, rdm_labels: np.ndarray) -> float:
    """Pearson correlation of the feature RDM's and the label RDM's upper triangles."""
    return float(np.mean(zscore(rdm_features) * zscore(rdm_labels)))


def ridge(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
          penalty: float = RIDGE_PENALTY, gram: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """1 - squared validation error of the ridge probe (intercept unpenalised) over that of the fit mean (`gram`:
    the eigendecomposition of the centred x_fit^T x_fit, when the caller has it)."""
    mx, my = x_fit.mean(0), y_fit.mean(0)
    xc = x_fit - mx
    w, v = gram or np.linalg.eigh(xc.T @ xc)
    coef = v @ ((v.T @ (xc.T @ (y_fit - my))) / (w + penalty)[:, None])  # (d, m)
    error = ((y_val - my - (x_val - mx) @ coef) ** 2).sum()
    base = ((y_val - my) ** 2).sum()
    return float(1.0 - error / base) if base > 0 else math.nan
