"""Numba kernels of the label generator, each with a NumPy reference that the tests compare it to.

Per-pixel arrays are channel-major, (C, B, S, S), so that any run of channels of the per-pixel array that
`pixels` makes is contiguous without a copy; `to_float16` writes the labels batch-first, (B, C, S, S).
Kernels run `prange` over the images only, so every image is computed sequentially by one thread: the
bytes of an image's labels do not depend on the batch it came in or on the number of threads. Filters
clamp at the borders (edge pixels repeated).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.typed import List

__all__ = [
    "CHROMA", "DEPTH", "LOG_DEPTH", "LUMA", "NORMAL", "N_PIXEL_CHANNELS", "RGB", "SHADE", "gaussian_weights",
    "inputs", "inputs_reference", "occlusion", "occlusion_reference", "pixels", "pixels_reference", "structure",
    "structure_reference", "to_float16",
]

_EIGHTH = np.float32(0.125)


def gaussian_weights(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps of radius ceil(3 sigma), float64."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


@njit(cache=True)
def _blur(a, w, tmp, out):
    """Separable blur of one (S, S) image by taps `w` (rows, then columns), clamped borders, into `out`.

    Written on 1-D rows, tap by tap with the pixel loop innermost, so that LLVM vectorises it (4x faster
    than indexing the 2-D arrays pixel by pixel).
    """
    h, wd = a.shape
    r = w.shape[0] // 2
    row = np.empty(wd + 2 * r, a.dtype)
    for v in range(h):
        src = a[v]
        row[:r] = src[0]
        row[r + wd:] = src[wd - 1]
        row[r:r + wd] = src
        dst = tmp[v]
        dst[:] = 0.0
        for j in range(2 * r + 1):
            wj = w[j]
            for u in range(wd):
                dst[u] += wj * row[u + j]
    for v in range(h):
        dst = out[v]
        dst[:] = 0.0
        for j in range(-r, r + 1):
            wj, src = w[j + r], tmp[min(max(v + j, 0), h - 1)]
            for u in range(wd):
                dst[u] += wj * src[u]


@njit(cache=True)
def _sobel(a, pad, gx, gy):
    """Sobel derivatives of one (S, S) image, divided by 8 so a unit ramp has gradient 1 per pixel."""
    h, wd = a.shape
    pad[1:h + 1, 1:wd + 1] = a
    pad[0, 1:wd + 1], pad[h + 1, 1:wd + 1] = a[0], a[h - 1]
    pad[:, 0], pad[:, wd + 1] = pad[:, 1], pad[:, wd]
    for v in range(h):
        p0, p1, p2, ox, oy = pad[v], pad[v + 1], pad[v + 2], gx[v], gy[v]
        for u in range(wd):
            # float32 throughout: a float64 literal here would promote the whole expression
            ox[u] = ((p0[u + 2] + p1[u + 2] + p1[u + 2] + p2[u + 2]) - (p0[u] + p1[u] + p1[u] + p2[u])) * _EIGHTH
            oy[u] = ((p2[u] + p2[u + 1] + p2[u + 1] + p2[u + 2])
                     - (p0[u] + p0[u + 1] + p0[u + 1] + p0[u + 2])) * _EIGHTH


@njit(parallel=True, cache=True)
def structure(x, w_smooth, w_window, k):
    """Gradient magnitude and Harris response of multi-channel images (C, B, S, S) -> two (B, S, S) float32.

    Each channel is Gaussian-smoothed (taps `w_smooth`) and Sobel-differentiated; the magnitude is
    sqrt(sum_c |grad|^2); the structure tensor sums grad grad^T over channels and is averaged over the
    window `w_window`; Harris R = det - k trace^2. Arithmetic in float32.
    """
    c, n, h, wd = x.shape
    ws, ww, k = w_smooth.astype(np.float32), w_window.astype(np.float32), np.float32(k)
    mag = np.empty((n, h, wd), np.float32)
    resp = np.empty((n, h, wd), np.float32)
    for b in prange(n):
        f32 = np.float32
        tmp, sm, pad = np.empty((h, wd), f32), np.empty((h, wd), f32), np.empty((h + 2, wd + 2), f32)
        gx, gy = np.empty((h, wd), f32), np.empty((h, wd), f32)
        jxx, jyy, jxy = np.zeros((h, wd), f32), np.zeros((h, wd), f32), np.zeros((h, wd), f32)
        for ch in range(c):
            _blur(x[ch, b], ws, tmp, sm)
            _sobel(sm, pad, gx, gy)
            for v in range(h):
                ax, ay, oxx, oyy, oxy = gx[v], gy[v], jxx[v], jyy[v], jxy[v]
                for u in range(wd):
                    oxx[u] += ax[u] * ax[u]
                    oyy[u] += ay[u] * ay[u]
                    oxy[u] += ax[u] * ay[u]
        axx, ayy, axy = np.empty((h, wd), f32), np.empty((h, wd), f32), np.empty((h, wd), f32)
        _blur(jxx, ww, tmp, axx)
        _blur(jyy, ww, tmp, ayy)
        _blur(jxy, ww, tmp, axy)
        for v in range(h):
            m, rr, a, bb, cc, dd, ee = mag[b, v], resp[b, v], jxx[v], jyy[v], axx[v], ayy[v], axy[v]
            for u in range(wd):
                m[u] = np.sqrt(a[u] + bb[u])
                tr = cc[u] + dd[u]
                rr[u] = cc[u] * dd[u] - ee[u] * ee[u] - k * tr * tr
    return mag, resp


def _blur_reference(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    r = len(w) // 2
    p = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(r, r)], mode="edge")
    a = sum(w[j] * p[..., j:j + a.shape[-1]] for j in range(len(w)))
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(r, r), (0, 0)], mode="edge")
    return sum(w[j] * p[..., j:j + a.shape[-2], :] for j in range(len(w)))


def structure_reference(x: np.ndarray, w_smooth: np.ndarray, w_window: np.ndarray, k: float):
    """NumPy reference of `structure`."""
    s = _blur_reference(x.astype(np.float64), w_smooth)
    p = np.pad(s, [(0, 0), (0, 0), (1, 1), (1, 1)], mode="edge")
    h, wd = x.shape[-2:]
    sh = lambda dv, du: p[..., 1 + dv:1 + dv + h, 1 + du:1 + du + wd]  # noqa: E731
    gx = (sh(-1, 1) + 2 * sh(0, 1) + sh(1, 1) - sh(-1, -1) - 2 * sh(0, -1) - sh(1, -1)) / 8
    gy = (sh(1, -1) + 2 * sh(1, 0) + sh(1, 1) - sh(-1, -1) - 2 * sh(-1, 0) - sh(-1, 1)) / 8
    jxx, jyy, jxy = (gx * gx).sum(0), (gy * gy).sum(0), (gx * gy).sum(0)
    mag = np.sqrt(jxx + jyy)
    axx, ayy, axy = (_blur_reference(j, w_window) for j in (jxx, jyy, jxy))
    resp = axx * ayy - axy * axy - k * (axx + ayy) ** 2
    return mag.astype(np.float32), resp.astype(np.float32)


# channels of the per-pixel array made by `pixels`, ordered so that every group a label reads is a run:
# z-buffer depth, camera-frame normal, log depth, quantised rgb, luma, chroma (U, V), reshading
DEPTH, NORMAL, LOG_DEPTH, RGB, LUMA, CHROMA, SHADE, N_PIXEL_CHANNELS = 0, 1, 4, 5, 8, 9, 11, 12
_LUMA = (0.299, 0.587, 0.114)  # BT.601 Y, U, V
_U = (-0.14713, -0.28886, 0.436)
_V = (0.615, -0.51499, -0.10001)


@njit(parallel=True, cache=True)
def pixels(rgb, normal, depth_z, depth_e, rotation, xs, ys, power):
    """Per-pixel quantities of a batch in one pass -> (N_PIXEL_CHANNELS, B, S, S) float32.

    rgb (B, S, S, 3) in [0, 1] is quantised to 8 bits first (what images/rgb stores); normal (B, S, S, 3)
    is in the world frame, rotation (B, 3, 3) camera -> world; xs, ys (B, S) are the ray slopes of the
    columns and rows. SHADE = min(1, power * cos(incidence) / distance^2).
    """
    nb, h, wd, _ = rgb.shape
    o = np.empty((N_PIXEL_CHANNELS, nb, h, wd), np.float32)
    lw, uw, vw = np.array(_LUMA, np.float32), np.array(_U, np.float32), np.array(_V, np.float32)
    scale, power, zero, one = np.float32(255.0), np.float32(power), np.float32(0.0), np.float32(1.0)
    for b in prange(nb):
        r, x = rotation[b].astype(np.float32), xs[b]
        for v in range(h):  # one short loop per output row: 3x faster than one loop doing everything
            src, q0, q1, q2 = rgb[b, v], o[RGB, b, v], o[RGB + 1, b, v], o[RGB + 2, b, v]
            for u in range(wd):
                q0[u] = min(max(np.rint(src[u, 0] * scale), zero), scale) / scale
                q1[u] = min(max(np.rint(src[u, 1] * scale), zero), scale) / scale
                q2[u] = min(max(np.rint(src[u, 2] * scale), zero), scale) / scale
            luma, cu, cv = o[LUMA, b, v], o[CHROMA, b, v], o[CHROMA + 1, b, v]
            for u in range(wd):
                luma[u] = lw[0] * q0[u] + lw[1] * q1[u] + lw[2] * q2[u]
                cu[u] = uw[0] * q0[u] + uw[1] * q1[u] + uw[2] * q2[u]
                cv[u] = vw[0] * q0[u] + vw[1] * q1[u] + vw[2] * q2[u]
            nrm, c0, c1, c2 = normal[b, v], o[NORMAL, b, v], o[NORMAL + 1, b, v], o[NORMAL + 2, b, v]
            for u in range(wd):  # R^T n
                n0, n1, n2 = nrm[u, 0], nrm[u, 1], nrm[u, 2]
                c0[u] = n0 * r[0, 0] + n1 * r[1, 0] + n2 * r[2, 0]
                c1[u] = n0 * r[0, 1] + n1 * r[1, 1] + n2 * r[2, 1]
                c2[u] = n0 * r[0, 2] + n1 * r[1, 2] + n2 * r[2, 2]
            z, d, y = depth_z[b, v], depth_e[b, v], ys[b, v]
            logz, oz, shade = o[LOG_DEPTH, b, v], o[DEPTH, b, v], o[SHADE, b, v]
            for u in range(wd):
                logz[u] = np.log(z[u])
            for u in range(wd):
                oz[u] = z[u]
                cos = -(c0[u] * x[u] + c1[u] * y + c2[u]) / np.sqrt(x[u] * x[u] + y * y + one)
                shade[u] = min(max(power * cos / (d[u] * d[u]), zero), one)
    return o


def pixels_reference(rgb, normal, depth_z, depth_e, rotation, xs, ys, power) -> np.ndarray:
    """NumPy reference of `pixels` (float64)."""
    q = np.clip(np.rint(rgb * np.float32(255)), 0, 255).astype(np.float64) / 255
    n = np.einsum("bvui,bij->bvuj", normal.astype(np.float64), rotation)
    x, y = xs[:, None, :].astype(np.float64), ys[:, :, None].astype(np.float64)
    cos = -(n[..., 0] * x + n[..., 1] * y + n[..., 2]) / np.sqrt(x * x + y * y + 1)
    shade = np.clip(power * cos / depth_e.astype(np.float64) ** 2, 0, 1)
    yuv = [q @ np.array(w) for w in (_LUMA, _U, _V)]
    chans = [depth_z, *np.moveaxis(n, -1, 0), np.log(depth_z), *np.moveaxis(q, -1, 0), *yuv, shade]
    return np.stack(chans).astype(np.float32)


@njit(cache=True)
def _plane_error(zp, nx, ny, nz, xp, yp, zq, xq, yq):
    """Relative error of the depth of ray q predicted by p's tangent plane (inf if the plane misses it)."""
    nd = zp * (nx * xp + ny * yp + nz)  # n . X_p with X_p = z_p (x_p, y_p, 1)
    den = nx * xq + ny * yq + nz
    if nd * den <= 0.0 or abs(den) <= 1e-6:
        return np.inf
    return abs(zq - nd / den) / min(zp, zq)


@njit(cache=True)
def _dilate(a, radius, tmp):
    """Max of one (S, S) image over each pixel's (2 radius + 1)^2 neighbourhood clipped to the image, in place.

    The square's max is separable: over the row window into `tmp`, then over the column window back.
    """
    h, wd = a.shape
    for v in range(h):
        src, dst = a[v], tmp[v]
        for u in range(wd):
            m = src[u]
            for j in range(max(u - radius, 0), min(u + radius + 1, wd)):
                m = max(m, src[j])
            dst[u] = m
    for v in range(h):
        dst = a[v]
        dst[:] = tmp[v]
        for j in range(max(v - radius, 0), min(v + radius + 1, h)):
            src = tmp[j]
            for u in range(wd):
                dst[u] = max(dst[u], src[u])


@njit(parallel=True, cache=True)
def occlusion(depth, normal, surface, xs, ys, n_room, lo, hi, radius):
    """Soft occlusion edges (B, S, S) float32 from z-depth (B, S, S), camera-frame normals (3, B, S, S),
    surface ids (B, S, S) and the ray slopes (B, S) of the columns (xs) and rows (ys).

    A 4-neighbour pair on two surfaces, one of them an object (id >= n_room), scores the smaller of the
    two tangent-plane extrapolation errors, ramped from lo (0) to hi (1); a pixel keeps its largest pair,
    then takes the max over its (2 radius + 1)^2 neighbourhood clipped to the image (radius 0: none).
    """
    nb, h, wd = depth.shape
    out = np.zeros((nb, h, wd), np.float32)
    for b in prange(nb):
        z, n, s, o = depth[b], normal[:, b], surface[b], out[b]
        for v in range(h):
            for u in range(wd):
                for dv, du in ((0, 1), (1, 0)):
                    v2, u2 = v + dv, u + du
                    if v2 >= h or u2 >= wd or s[v, u] == s[v2, u2] or max(s[v, u], s[v2, u2]) < n_room:
                        continue
                    e1 = _plane_error(z[v, u], n[0, v, u], n[1, v, u], n[2, v, u], xs[b, u], ys[b, v],
                                      z[v2, u2], xs[b, u2], ys[b, v2])
                    e2 = _plane_error(z[v2, u2], n[0, v2, u2], n[1, v2, u2], n[2, v2, u2], xs[b, u2], ys[b, v2],
                                      z[v, u], xs[b, u], ys[b, v])
                    edge = min(max((min(e1, e2) - lo) / (hi - lo), 0.0), 1.0)
                    o[v, u] = max(o[v, u], edge)
                    o[v2, u2] = max(o[v2, u2], edge)
        if radius > 0:
            _dilate(o, radius, np.empty((h, wd), np.float32))
    return out


def occlusion_reference(depth, normal, surface, xs, ys, n_room, lo, hi, radius) -> np.ndarray:
    """NumPy reference of `occlusion` (float64)."""
    z, n = depth.astype(np.float64), normal.astype(np.float64)
    x, y = np.broadcast_to(xs[:, None, :], z.shape), np.broadcast_to(ys[:, :, None], z.shape)
    nd = z * (n[0] * x + n[1] * y + n[2])
    out = np.zeros(z.shape)
    for first, second in ((np.s_[:, :, :-1], np.s_[:, :, 1:]), (np.s_[:, :-1, :], np.s_[:, 1:, :])):
        errors = []
        for p, q in ((first, second), (second, first)):
            den = n[0][p] * x[q] + n[1][p] * y[q] + n[2][p]
            ok = (nd[p] * den > 0) & (np.abs(den) > 1e-6)
            pred = np.where(ok, nd[p] / np.where(ok, den, 1.0), np.inf)
            errors.append(np.abs(z[q] - pred) / np.minimum(z[p], z[q]))
        a, b = surface[first], surface[second]
        pair = (a != b) & (np.maximum(a, b) >= n_room)
        edge = np.where(pair, np.clip((np.minimum(*errors) - lo) / (hi - lo), 0.0, 1.0), 0.0)
        out[first] = np.maximum(out[first], edge)
        out[second] = np.maximum(out[second], edge)
    h, wd = z.shape[-2:]
    p = np.pad(out, [(0, 0), (radius, radius), (radius, radius)], constant_values=-np.inf)  # clipped window
    out = np.max([p[:, radius + dv:radius + dv + h, radius + du:radius + du + wd]
                  for dv in range(-radius, radius + 1) for du in range(-radius, radius + 1)], axis=0)
    return out.astype(np.float32)


@njit(parallel=True, cache=True)
def inputs(rgb, noise, quantiles, sigma, boxes, mask_value, perms):
    """The uint8 network inputs (B, C, S, S) of a batch: rgb, gray, noisy, masked, permuted.

    rgb (B, S, S, 3) in [0, 1] is quantised first; the noise is sigma * quantiles[noise], noise (B, S, S, 3)
    uint16 (with uniform indices and the standard normal's quantiles, a standard normal sample);
    boxes (B, 3) = (row, column, side) of the masked square; perms (B, 9): output tile i shows input tile
    perms[b, i] (tiles of S // 3 pixels from the top left; the border right and below stays in place).
    """
    nb, s = rgb.shape[0], rgb.shape[1]
    t = s // 3
    q = np.empty((nb, 3, s, s), np.uint8)
    gray, noisy = np.empty((nb, 1, s, s), np.uint8), np.empty((nb, 3, s, s), np.uint8)
    masked, permuted = np.empty((nb, 3, s, s), np.uint8), np.empty((nb, 3, s, s), np.uint8)
    scale, zero, sigma = np.float32(255.0), np.float32(0.0), np.float32(sigma)
    lw = np.array(_LUMA, np.float32)
    for b in prange(nb):
        for v in range(s):
            for u in range(s):
                k0 = min(max(np.rint(rgb[b, v, u, 0] * scale), zero), scale)
                k1 = min(max(np.rint(rgb[b, v, u, 1] * scale), zero), scale)
                k2 = min(max(np.rint(rgb[b, v, u, 2] * scale), zero), scale)
                q[b, 0, v, u], q[b, 1, v, u], q[b, 2, v, u] = np.uint8(k0), np.uint8(k1), np.uint8(k2)
                f0, f1, f2 = k0 / scale, k1 / scale, k2 / scale
                y = (f0 * lw[0] + f1 * lw[1] + f2 * lw[2]) * scale
                gray[b, 0, v, u] = np.uint8(min(max(np.rint(y), zero), scale))
                n0 = min(max(np.rint((f0 + sigma * quantiles[noise[b, v, u, 0]]) * scale), zero), scale)
                n1 = min(max(np.rint((f1 + sigma * quantiles[noise[b, v, u, 1]]) * scale), zero), scale)
                n2 = min(max(np.rint((f2 + sigma * quantiles[noise[b, v, u, 2]]) * scale), zero), scale)
                noisy[b, 0, v, u], noisy[b, 1, v, u], noisy[b, 2, v, u] = np.uint8(n0), np.uint8(n1), np.uint8(n2)
        masked[b] = q[b]
        r0, c0, side = boxes[b, 0], boxes[b, 1], boxes[b, 2]
        masked[b, :, r0:r0 + side, c0:c0 + side] = mask_value
        permuted[b] = q[b]
        for i in range(9):
            src = perms[b, i]
            sv, su, dv, du = (src // 3) * t, (src % 3) * t, (i // 3) * t, (i % 3) * t
            permuted[b, :, dv:dv + t, du:du + t] = q[b, :, sv:sv + t, su:su + t]
    return q, gray, noisy, masked, permuted


def inputs_reference(rgb, noise, quantiles, sigma, boxes, mask_value, perms):
    """NumPy reference of `inputs`."""
    def to_uint8(x):
        return np.clip(np.rint(x * np.float32(255)), 0, 255).astype(np.uint8)

    q = to_uint8(rgb)  # (B, S, S, 3)
    f = q.astype(np.float32) / np.float32(255)
    luma = f[..., 0] * np.float32(_LUMA[0]) + f[..., 1] * np.float32(_LUMA[1]) + f[..., 2] * np.float32(_LUMA[2])
    masked, permuted = q.copy(), q.copy()
    t = rgb.shape[1] // 3
    for b, ((r, c, side), perm) in enumerate(zip(boxes, perms)):
        masked[b, r:r + side, c:c + side] = mask_value
        for i, j in enumerate(perm):
            permuted[b, i // 3 * t:(i // 3 + 1) * t, i % 3 * t:(i % 3 + 1) * t] = \
                q[b, j // 3 * t:(j // 3 + 1) * t, j % 3 * t:(j % 3 + 1) * t]
    noisy = to_uint8(f + np.float32(sigma) * quantiles[noise])
    return tuple(np.ascontiguousarray(a.transpose(0, 3, 1, 2)) for a in (q, to_uint8(luma)[..., None], noisy,
                                                                        masked, permuted))


@njit(parallel=True, cache=True)
def _half_bits(values, jobs, out):
    """IEEE binary16 bits of float32 arrays (C, B, P) into uint16 arrays (B, C, P), round to nearest even;
    jobs (n, 2) lists the (array, channel) pairs, so that one parallel region converts every label.

    NumPy's float32 -> float16 cast is scalar (~4 ns a value, more than the labels' arithmetic); this is
    the usual bit-level cast, written with selects in uint32 so that it vectorises.
    Overflow gives inf; so does NaN (a NaN select would halve the speed, and labels hold no NaN).
    """
    nb = values[0].shape[1]
    for job in prange(jobs.shape[0] * nb):
        a, ch, b = jobs[job // nb, 0], jobs[job // nb, 1], job % nb
        val = values[a][ch, b]
        src, dst = val.view(np.uint32), out[a][b, ch]
        for i in range(val.shape[0]):
            u = src[i] & np.uint32(0x7FFFFFFF)
            # normal: rebias the exponent, round the 13 dropped bits to nearest even
            h = (u - np.uint32(112 << 23) + np.uint32(0xFFF) + ((u >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
            # |x| < 2^-14: subnormal or zero, counted in units of 2^-24 (the scaling is exact)
            sub = np.uint32(np.int32(np.rint(abs(val[i]) * np.float32(16777216.0))))
            h = sub if u < np.uint32(113 << 23) else h
            h = np.uint32(0x7C00) if u >= np.uint32(143 << 23) else h
            dst[i] = np.uint16(h | ((src[i] >> np.uint32(16)) & np.uint32(0x8000)))


def to_float16(*arrays: np.ndarray) -> list[np.ndarray]:
    """Channel-major float32 arrays (C, B, ...), all with the same B, -> batch-first float16 (B, C, ...),
    each value as `astype(np.float16)` gives it for finite values (NaN becomes inf), ~10x faster."""
    if not arrays:
        return []
    arrays = [np.ascontiguousarray(a, np.float32) for a in arrays]
    flat = List([a.reshape(a.shape[0], a.shape[1], -1) for a in arrays])
    out = List([np.empty((f.shape[1], f.shape[0], f.shape[2]), np.uint16) for f in flat])
    jobs = np.array([(i, c) for i, f in enumerate(flat) for c in range(f.shape[0])], np.int64).reshape(-1, 2)
    if len(jobs):
        _half_bits(flat, jobs, out)
    return [o.view(np.float16).reshape((a.shape[1], a.shape[0]) + a.shape[2:]) for o, a in zip(out, arrays)]
