"""Numba ray caster: a batch of (scene, camera) views -> per-pixel `Buffers` (DESIGN.md section 4).

    from taskonomy.scenes.render import render
    buffers = render([scene] * 2, [camera, other_camera], size=64)

Scenes are packed into flat padded arrays once per call; one `parallel=True` kernel runs `prange` over
(view, row) and works a row in passes (ray directions and room exits, branch-free so they vectorise; nearest
object hits; then shading light by light and object by object, a vectorised bounding-sphere cull before the
exact shadow tests). No fastmath: the same input gives the same bytes on any thread count.
Conventions (the NumPy oracle in `_reference.py` follows the same ones):
- surfaces: 0 floor, 1 ceiling, 2 wall x=0, 3 wall x=W, 4 wall y=0, 5 wall y=D, then 6 + k for object k;
  a hit on a room face lies exactly on its plane (no texture parity flips at z = 0 or x = W).
- STRIPES: parity of floor((p . a) / scale), bands of width `scale`, with a = x on the floor, the ceiling
  and the walls y=0/D, a = y on the walls x=0/W (vertical wallpaper stripes), a = (1, 1, 1)/sqrt(3) on
  objects (so every face of every shape shows bands).
- CHECKER: parity of floor(x/s) + floor(y/s) + floor(z/s) (cells of side `scale`).
- NOISE: value noise at p / scale: `_lattice` hashes the integer corners, smoothstep-weighted trilinear blend.
- rgb's gamma is taken in float32 (the output's precision): within 1e-6 of the float64 formula.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, prange

from taskonomy.scenes.scene import BOX, CYLINDER, N_ROOM_FACES, SPHERE, TEX_CHECKER, TEX_NOISE, TEX_STRIPES, \
    Buffers, Camera, Scene

__all__ = ["render"]

EPS_SHADOW = 1e-6  # shadow ray origin offset along the normal, metres
_INV_SQRT3 = 1.0 / np.sqrt(3.0)
# object record columns (float64): shape, centre xyz, half sizes xyz, cos/sin yaw, r^2, 1/r, bounding radius


@njit(cache=True, error_model="numpy", inline="always")
def _lattice(ix, iy, iz):
    """Deterministic hash of an integer lattice point -> [0, 1) (32-bit mix kept inside int64)."""
    h = (ix * 1619 + iy * 31337 + iz * 6971 + 1013) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return h * (1.0 / 4294967296.0)


@njit(cache=True, error_model="numpy")
def _value_noise(x, y, z):
    fx, fy, fz = np.floor(x), np.floor(y), np.floor(z)
    ix, iy, iz = np.int64(fx), np.int64(fy), np.int64(fz)
    tx, ty, tz = x - fx, y - fy, z - fz
    tx, ty, tz = tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty), tz * tz * (3.0 - 2.0 * tz)
    c00 = _lattice(ix, iy, iz) * (1.0 - tx) + _lattice(ix + 1, iy, iz) * tx
    c10 = _lattice(ix, iy + 1, iz) * (1.0 - tx) + _lattice(ix + 1, iy + 1, iz) * tx
    c01 = _lattice(ix, iy, iz + 1) * (1.0 - tx) + _lattice(ix + 1, iy, iz + 1) * tx
    c11 = _lattice(ix, iy + 1, iz + 1) * (1.0 - tx) + _lattice(ix + 1, iy + 1, iz + 1) * tx
    return (c00 * (1.0 - ty) + c10 * ty) * (1.0 - tz) + (c01 * (1.0 - ty) + c11 * ty) * tz


@njit(cache=True, error_model="numpy")
def _texture_weight(kind, surf, inv_s, px, py, pz):
    """Weight of colour1 (0 = colour0) of a solid texture at a world point."""
    if kind == TEX_STRIPES:
        if surf < 2 or (surf >= 4 and surf < N_ROOM_FACES):
            c = px
        elif surf < N_ROOM_FACES:
            c = py
        else:
            c = (px + py + pz) * _INV_SQRT3
        return float(np.int64(np.floor(c * inv_s)) & 1)
    if kind == TEX_CHECKER:
        n = np.int64(np.floor(px * inv_s)) + np.int64(np.floor(py * inv_s)) + np.int64(np.floor(pz * inv_s))
        return float(n & 1)
    if kind == TEX_NOISE:
        return _value_noise(px * inv_s, py * inv_s, pz * inv_s)
    return 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _slab(o, d, h):
    """Parameter interval of o + t d inside |x| <= h (empty when parallel and outside)."""
    if d == 0.0:
        if abs(o) <= h:
            return -np.inf, np.inf
        return np.inf, -np.inf
    inv = 1.0 / d
    t0, t1 = (-h - o) * inv, (h - o) * inv
    if t0 > t1:
        return t1, t0
    return t0, t1


@njit(cache=True, error_model="numpy")
def _hit_object(objs, sc, k, cx, cy, cz, dx, dy, dz):
    """(t_near, t_far, code) of the ray c + t d, c relative to the centre of object k of scene sc.

    code: the box face axis in the box frame, or 0 cylinder side / 1 cylinder cap; t_near > t_far on a miss.
    """
    shape = objs[sc, k, 0]
    if shape == SPHERE:
        b = cx * dx + cy * dy + cz * dz
        disc = b * b - (cx * cx + cy * cy + cz * cz - objs[sc, k, 9])
        if disc < 0.0:
            return np.inf, -np.inf, 0
        sq = np.sqrt(disc)
        return -b - sq, -b + sq, 0
    if shape == CYLINDER:
        z0, z1 = _slab(cz, dz, objs[sc, k, 6])
        a = dx * dx + dy * dy
        if a > 0.0:
            b = cx * dx + cy * dy
            disc = b * b - a * (cx * cx + cy * cy - objs[sc, k, 9])
            if disc < 0.0:
                return np.inf, -np.inf, 0
            sq = np.sqrt(disc)
            t0, t1 = (-b - sq) / a, (-b + sq) / a
        elif cx * cx + cy * cy <= objs[sc, k, 9]:
            t0, t1 = -np.inf, np.inf
        else:
            return np.inf, -np.inf, 0
        if z0 > t0:
            return z0, min(t1, z1), 1
        return t0, min(t1, z1), 0
    # box: into its frame (rotate by -yaw about z around the centre), then the slab test
    co, si = objs[sc, k, 7], objs[sc, k, 8]
    x0, x1 = _slab(co * cx + si * cy, co * dx + si * dy, objs[sc, k, 4])
    y0, y1 = _slab(-si * cx + co * cy, -si * dx + co * dy, objs[sc, k, 5])
    z0, z1 = _slab(cz, dz, objs[sc, k, 6])
    tn, axis = x0, 0
    if y0 > tn:
        tn, axis = y0, 1
    if z0 > tn:
        tn, axis = z0, 2
    return tn, min(x1, y1, z1), axis


@njit(cache=True, error_model="numpy")
def _object_normal(objs, sc, k, code, px, py, pz, dx, dy, dz):
    """Outward unit normal of object k at a hit point (before facing it to the camera)."""
    shape = objs[sc, k, 0]
    if shape == SPHERE or (shape == CYLINDER and code == 0):
        nx, ny = px - objs[sc, k, 1], py - objs[sc, k, 2]
        nz = pz - objs[sc, k, 3] if shape == SPHERE else 0.0
        inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz)
        return nx * inv, ny * inv, nz * inv
    if (shape == CYLINDER and code == 1) or code == 2:
        return 0.0, 0.0, -1.0 if dz > 0.0 else 1.0
    co, si = objs[sc, k, 7], objs[sc, k, 8]
    ld = co * dx + si * dy if code == 0 else -si * dx + co * dy
    s = -1.0 if ld > 0.0 else 1.0  # the face the ray enters through
    if code == 0:
        return s * co, s * si, 0.0
    return -s * si, s * co, 0.0


@njit(cache=True, error_model="numpy", inline="always")
def _gamma(x):
    # float32 pow costs a fraction of a float64 one, and the output is float32 anyway
    if x >= 1.0:
        return 1.0
    return np.float64(np.float32(x) ** np.float32(1.0 / 2.2))


# rows of the per-row scratch array: hit point, normal, albedo, shading, then per light: unit direction to
# the light, distance, squared distance, cosine; the albedo ** (1/2.2) (-1: not precomputed); last the primary
# ray: unit direction, 1 / length of the camera-frame direction, distance to the room and which face
_PX, _NX, _AR, _SHADE, _LX, _DIST, _D2, _NDL, _AG, _DX, _INV, _T, _FACE, _NSCR = (
    0, 3, 6, 9, 10, 13, 14, 15, 16, 19, 22, 23, 24, 25)


@njit(cache=True, error_model="numpy")
def _room_row(cam, W, D, H, v, size, scr):
    """Unit ray directions of image row v and where they leave the room (seen from inside).

    Branch-free on purpose: the compiler vectorises it, square roots and divisions included.
    """
    ox, oy, oz, f = cam[0], cam[1], cam[2], cam[12]
    yc = (v + 0.5 - 0.5 * size) / f
    for u in range(size):
        xc = (u + 0.5 - 0.5 * size) / f
        dx = cam[3] * xc + cam[4] * yc + cam[5]
        dy = cam[6] * xc + cam[7] * yc + cam[8]
        dz = cam[9] * xc + cam[10] * yc + cam[11]
        inv_len = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
        dx, dy, dz = dx * inv_len, dy * inv_len, dz * inv_len
        # each axis: the plane the ray heads to; a zero component gives -inf or nan, never chosen
        tz = ((H if dz > 0.0 else 0.0) - oz) / dz
        tx = ((W if dx > 0.0 else 0.0) - ox) / dx
        ty = ((D if dy > 0.0 else 0.0) - oy) / dy
        t = tz if tz > 0.0 else np.inf
        face = 1.0 if dz > 0.0 else 0.0
        if tx > 0.0 and tx < t:
            t, face = tx, (3.0 if dx > 0.0 else 2.0)
        if ty > 0.0 and ty < t:
            t, face = ty, (5.0 if dy > 0.0 else 4.0)
        scr[_DX, u], scr[_DX + 1, u], scr[_DX + 2, u], scr[_INV, u] = dx, dy, dz, inv_len
        scr[_T, u], scr[_FACE, u] = t, face


@njit(cache=True, error_model="numpy", inline="always")
def _hit_frame(objs, sc, surf, code, px, py, pz, dx, dy, dz, W, D, H):
    """Hit point (exactly on the plane for room faces), unit normal facing the camera, curvatures k1, k2."""
    k1 = k2 = nx = ny = nz = 0.0
    # room faces: exact plane coordinates keep solid textures free of parity flips at z = 0, x = W, ...
    if surf == 0:
        pz, nz = 0.0, 1.0
    elif surf == 1:
        pz, nz = H, -1.0
    elif surf == 2:
        px, nx = 0.0, 1.0
    elif surf == 3:
        px, nx = W, -1.0
    elif surf == 4:
        py, ny = 0.0, 1.0
    elif surf == 5:
        py, ny = D, -1.0
    else:
        k = surf - N_ROOM_FACES
        nx, ny, nz = _object_normal(objs, sc, k, code, px, py, pz, dx, dy, dz)
        if objs[sc, k, 0] == SPHERE:
            k1 = k2 = objs[sc, k, 10]
        elif objs[sc, k, 0] == CYLINDER and code == 0:
            k1 = objs[sc, k, 10]
    if nx * dx + ny * dy + nz * dz > 0.0:
        nx, ny, nz = -nx, -ny, -nz
    return px, py, pz, nx, ny, nz, k1, k2


@njit(cache=True, error_model="numpy")
def _trace_row(b, v, cam, sc, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_gamma, tex_inv_scale, size,
               full, scr, depth_z, depth_e, position, normal, albedo, surface, semantic, curvature):
    """Primary rays of image row v of view b: geometry outputs, plus hit point, normal, albedo in scr."""
    ox, oy, oz = cam[0], cam[1], cam[2]
    W, D, H = rooms[sc, 0], rooms[sc, 1], rooms[sc, 2]
    k_obj = n_obj[sc]
    oc = np.empty((k_obj, 4))  # camera - centre, |.|^2 - R^2: the bounding-sphere cull, once per row
    for k in range(k_obj):
        oc[k, 0], oc[k, 1], oc[k, 2] = ox - objs[sc, k, 1], oy - objs[sc, k, 2], oz - objs[sc, k, 3]
        oc[k, 3] = oc[k, 0] ** 2 + oc[k, 1] ** 2 + oc[k, 2] ** 2 - objs[sc, k, 11] ** 2
    _room_row(cam, W, D, H, v, size, scr)
    for u in range(size):
        dx, dy, dz, inv_len = scr[_DX, u], scr[_DX + 1, u], scr[_DX + 2, u], scr[_INV, u]
        t, surf = scr[_T, u], int(scr[_FACE, u])
        code = 0
        for k in range(k_obj):
            bb = oc[k, 0] * dx + oc[k, 1] * dy + oc[k, 2] * dz
            if oc[k, 3] > 0.0 and (bb >= 0.0 or bb * bb < oc[k, 3]):
                continue
            tn, tf, c = _hit_object(objs, sc, k, oc[k, 0], oc[k, 1], oc[k, 2], dx, dy, dz)
            if tn <= tf and 0.0 < tn < t:
                t, surf, code = tn, N_ROOM_FACES + k, c
        px, py, pz, nx, ny, nz, k1, k2 = _hit_frame(objs, sc, surf, code, ox + t * dx, oy + t * dy, oz + t * dz,
                                                    dx, dy, dz, W, D, H)
        kind = tex_kind[sc, surf]
        w = _texture_weight(kind, surf, tex_inv_scale[sc, surf], px, py, pz)
        for c in range(3):
            scr[_AR + c, u] = tex_col[sc, surf, c] + (tex_col[sc, surf, 3 + c] - tex_col[sc, surf, c]) * w
        if kind == TEX_NOISE:
            scr[_AG, u] = -1.0
        else:  # w is 0 or 1, the albedo one of two colours: (a s)^g = a^g s^g saves two pows of three
            j = 3 if w > 0.5 else 0
            for c in range(3):
                scr[_AG + c, u] = tex_gamma[sc, surf, j + c]
        scr[_PX, u], scr[_PX + 1, u], scr[_PX + 2, u] = px, py, pz
        scr[_NX, u], scr[_NX + 1, u], scr[_NX + 2, u] = nx, ny, nz
        depth_e[b, v, u] = t
        depth_z[b, v, u] = t * inv_len  # the unnormalised direction has a unit forward component
        position[b, v, u, 0], position[b, v, u, 1], position[b, v, u, 2] = px, py, pz
        if full:
            normal[b, v, u, 0], normal[b, v, u, 1], normal[b, v, u, 2] = nx, ny, nz
            for c in range(3):
                albedo[b, v, u, c] = scr[_AR + c, u]
            surface[b, v, u] = surf
            semantic[b, v, u] = 1 if surf < N_ROOM_FACES else obj_class[sc, surf - N_ROOM_FACES]
            curvature[b, v, u, 0], curvature[b, v, u, 1] = k1, k2


@njit(cache=True, error_model="numpy")
def _shade_row(sc, objs, shadow, lights, n_lights, k_obj, ambient, size, scr, cand, dark):
    """Shading of one row: ambient + lights * cos / d^2 where a shadow ray reaches the light past the objects.

    Works light by light and object by object over the whole row, so that the cheap bounding-sphere cull
    is a branch-free loop; only the few candidates it leaves get an exact (scalar) ray-object test.
    """
    for u in range(size):
        scr[_SHADE, u] = ambient[sc]
    for li in range(n_lights[sc]):
        for u in range(size):
            lx, ly, lz = (lights[sc, li, 0] - scr[_PX, u], lights[sc, li, 1] - scr[_PX + 1, u],
                          lights[sc, li, 2] - scr[_PX + 2, u])
            d2 = lx * lx + ly * ly + lz * lz
            dist = np.sqrt(d2)
            lx, ly, lz = lx / dist, ly / dist, lz / dist
            ndl = scr[_NX, u] * lx + scr[_NX + 1, u] * ly + scr[_NX + 2, u] * lz
            scr[_LX, u], scr[_LX + 1, u], scr[_LX + 2, u] = lx, ly, lz
            scr[_DIST, u], scr[_D2, u], scr[_NDL, u] = dist, d2, ndl
            dark[u] = not ndl > 0.0  # facing away: no shadow ray needed
        for k in range(k_obj):
            # the bounding sphere seen from the light: centre - light, |.|^2 - R^2, R (per scene)
            ex, ey, ez = shadow[sc, li, k, 0], shadow[sc, li, k, 1], shadow[sc, li, k, 2]
            cc, r = shadow[sc, li, k, 3], shadow[sc, li, k, 4]
            for u in range(size):
                bb = -(ex * scr[_LX, u] + ey * scr[_LX + 1, u] + ez * scr[_LX + 2, u])
                cand[u] = (bb < scr[_DIST, u] + r) & (bb + r > 0.0) & ((cc <= 0.0) | (bb * bb >= cc))
            for u in range(size):
                if not cand[u] or dark[u]:
                    continue
                # the shadow ray starts a hair off the surface so that it does not hit its own object
                sx = scr[_PX, u] + EPS_SHADOW * scr[_NX, u] - objs[sc, k, 1]
                sy = scr[_PX + 1, u] + EPS_SHADOW * scr[_NX + 1, u] - objs[sc, k, 2]
                sz = scr[_PX + 2, u] + EPS_SHADOW * scr[_NX + 2, u] - objs[sc, k, 3]
                tn, tf, _ = _hit_object(objs, sc, k, sx, sy, sz, scr[_LX, u], scr[_LX + 1, u], scr[_LX + 2, u])
                dark[u] = max(tn, 0.0) < min(tf, scr[_DIST, u])
        power = lights[sc, li, 3]
        for u in range(size):
            if not dark[u]:
                scr[_SHADE, u] += power * scr[_NDL, u] / max(scr[_D2, u], 0.25)


@njit(parallel=True, cache=True, error_model="numpy")
def _render_kernel(cams, view_scene, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_gamma, tex_inv_scale,
                   lights, n_lights, shadow, ambient, size, full,
                   rgb, depth_z, depth_e, position, normal, albedo, shading, surface, semantic, curvature):
    n_views = cams.shape[0]
    for job in prange(n_views * size):
        b, v = job // size, job % size
        sc = view_scene[b]
        scr = np.empty((_NSCR, size))  # per-row scratch: the kernel's only allocations
        masks = np.empty((2, size), np.bool_)
        _trace_row(b, v, cams[b], sc, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_gamma, tex_inv_scale,
                   size, full, scr, depth_z, depth_e, position, normal, albedo, surface, semantic, curvature)
        _shade_row(sc, objs, shadow, lights, n_lights, n_obj[sc], ambient, size, scr, masks[0], masks[1])
        for u in range(size):
            shade = scr[_SHADE, u]
            if scr[_AG, u] < 0.0:
                for c in range(3):
                    rgb[b, v, u, c] = _gamma(scr[_AR + c, u] * shade)
            else:
                shade_g = np.float64(np.float32(shade) ** np.float32(1.0 / 2.2))
                for c in range(3):
                    rgb[b, v, u, c] = min(scr[_AG + c, u] * shade_g, 1.0)
            if full:
                shading[b, v, u] = shade


def _scatter(counts: np.ndarray, width: int, parts: list[np.ndarray], fill: float, dtype) -> np.ndarray:
    """Stack per-scene arrays of varying length (counts) into one (n, width, ...) array padded with fill."""
    stacked = np.concatenate(parts)
    out = np.full((len(counts), width) + stacked.shape[1:], fill, dtype)
    rows = np.repeat(np.arange(len(counts)), counts)
    out[rows, np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)] = stacked
    return out


def _pack_scenes(scenes: Sequence[Scene]):
    """Flat padded arrays of the distinct scenes (by identity) and each view's index into them."""
    index: dict[int, int] = {}
    view_scene = np.array([index.setdefault(id(s), len(index)) for s in scenes], np.int64)
    unique = list({id(s): s for s in scenes}.values())  # insertion order = first appearance
    n_obj = np.array([s.n_objects for s in unique], np.int64)
    n_lights = np.array([s.light_pos.shape[0] for s in unique], np.int64)
    k_max, l_max = max(1, int(n_obj.max())), max(1, int(n_lights.max()))
    shape = np.concatenate([s.obj_shape for s in unique])
    size = np.concatenate([s.obj_size for s in unique]).reshape(-1, 3)
    yaw = np.concatenate([s.obj_yaw for s in unique])
    bound = np.where(shape == BOX, np.sqrt(np.sum(size ** 2, axis=1)), size[:, 0])
    bound = np.where(shape == CYLINDER, np.hypot(size[:, 0], size[:, 2]), bound)
    rec = np.column_stack([shape, np.concatenate([s.obj_center for s in unique]).reshape(-1, 3), size,
                           np.cos(yaw), np.sin(yaw), size[:, 0] ** 2, 1.0 / size[:, 0],
                           bound + 1e-5])  # margin: rounding never rejects a true hit at a box corner
    objs = _scatter(n_obj, k_max, [rec], 0.0, np.float64)
    obj_class = _scatter(n_obj, k_max, [s.obj_class for s in unique], 0, np.int64)
    n_surf = n_obj + N_ROOM_FACES
    tex_kind = _scatter(n_surf, k_max + N_ROOM_FACES, [s.tex_kind for s in unique], 0, np.int64)
    tex_col = _scatter(n_surf, k_max + N_ROOM_FACES, [s.tex_color.reshape(-1, 6) for s in unique], 0.0, np.float64)
    tex_gamma = tex_col ** (1.0 / 2.2)
    tex_inv_scale = 1.0 / _scatter(n_surf, k_max + N_ROOM_FACES, [s.tex_scale for s in unique], 1.0, np.float64)
    light_rec = [np.column_stack([s.light_pos, s.light_power]) for s in unique]
    lights = _scatter(n_lights, l_max, light_rec, 0.0, np.float64)
    # per (scene, light, object): the object's bounding sphere seen from the light, for the shadow rays' cull
    e = objs[:, None, :, 1:4] - lights[:, :, None, :3]
    radius = np.broadcast_to(objs[:, None, :, 11:12], e.shape[:3] + (1,))
    shadow = np.concatenate([e, np.sum(e ** 2, axis=3, keepdims=True) - radius ** 2, radius], axis=3)
    rooms = np.array([s.room for s in unique], np.float64).reshape(-1, 3)
    ambient = np.array([s.ambient for s in unique], np.float64)
    return (view_scene, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_gamma, tex_inv_scale, lights, n_lights,
            np.ascontiguousarray(shadow), ambient)


def _pack_cameras(cameras: Sequence[Camera], size: int) -> np.ndarray:
    """(n, 13): position, camera -> world rotation row-major, focal length in pixels."""
    cams = np.empty((len(cameras), 13))
    cams[:, :3] = [c.position for c in cameras]
    cams[:, 3:12] = np.array([c.rotation for c in cameras], np.float64).reshape(-1, 9)
    cams[:, 12] = [c.focal(size) for c in cameras]
    return cams


# Buffers fields in order: channels and dtype per pixel
_FIELDS = ((3, np.float32), (1, np.float32), (1, np.float32), (3, np.float32), (3, np.float32), (3, np.float32),
           (1, np.float32), (1, np.int32), (1, np.uint8), (2, np.float32))
_FAST = 4  # full=False fills the first four: rgb, depth_z, depth_euclid, position


def _allocate(n: int, size: int, count: int) -> list[np.ndarray]:
    """The first `count` output arrays as views of one block.

    One large block instead of ten arrays: numpy asks for huge pages past 4 MB, and the page faults of
    freshly mapped output memory otherwise cost about a sixth of the render time.
    """
    px = n * size * size
    nbytes = [-(-px * c * np.dtype(d).itemsize // 64) * 64 for c, d in _FIELDS[:count]]  # 64-byte aligned
    block = np.empty(sum(nbytes) + 64, np.uint8)
    start = -block.ctypes.data % 64
    arrays = []
    for nb, (c, d) in zip(nbytes, _FIELDS[:count]):
        shape = (n, size, size) + ((c,) if c > 1 else ())
        arrays.append(block[start:start + px * c * np.dtype(d).itemsize].view(d).reshape(shape))
        start += nb
    return arrays


def render(scenes: Sequence[Scene], cameras: Sequence[Camera], size: int, full: bool = True) -> Buffers:
    """Ray-cast view i of `scenes[i]` from `cameras[i]` at size x size pixels (Numba, parallel over rows).

    full=False fills only rgb, depth_z, depth_euclid and position (bit-identical to full=True); the other
    arrays come back zero-filled. A scene repeated (by identity) in `scenes` is packed once.
    """
    if len(scenes) != len(cameras):
        raise ValueError(f"render: expected one camera per scene, got {len(scenes)} scenes and {len(cameras)} cameras")
    if int(size) < 1:
        raise ValueError(f"render: expected a positive image size, got {size}")
    size, n = int(size), len(cameras)
    out = _allocate(n, size, len(_FIELDS) if full else _FAST)
    # full=False: the kernel never touches the others (empty stand-ins here, zeros in the result)
    args = out if full else out + [np.empty((0,) * (3 + (c > 1)), d) for c, d in _FIELDS[_FAST:]]
    if n:
        _render_kernel(_pack_cameras(cameras, size), *_pack_scenes(scenes), size, bool(full), *args)
    if not full:  # calloc'd pages: free until someone reads them
        out += [np.zeros((n, size, size) + ((c,) if c > 1 else ()), d) for c, d in _FIELDS[_FAST:]]
    return Buffers(*out)
