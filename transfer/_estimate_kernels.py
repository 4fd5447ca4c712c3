"""Numba kernel of the transferability estimators: LogME's fixed point over (alpha, beta), many label columns at once.

    from taskonomy.transfer.estimate import logme     # the dispatch point; never call this directly

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

__all__ = ["evidence", "fixed_point", "logme_columns"]

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
