"""Numba ray caster: a batch of (scene, camera) views -> per-pixel `Buffers` (DESIGN.md section 4).

    from taskonomy.scenes.render import render
    buffers = render([scene] * 2, [camera, other_camera], size=64)

Scenes are packed into flat padded arrays once per call; one `parallel=True` kernel runs `prange` over
(view, row). Surfaces: 0 floor, 1 ceiling, 2 wall x=0, 3 wall x=W, 4 wall y=0, 5 wall y=D, then 6 + k.
Texture conventions (the NumPy oracle in `_reference.py` implements the same spec):
- STRIPES: parity of floor((p . a) / scale), bands of width `scale`, with a = x on the floor, the ceiling
  and the walls y=0/D, a = y on the walls x=0/W (vertical wallpaper stripes), a = (1, 1, 1)/sqrt(3) on
  objects (so every face of every shape shows bands).
- CHECKER: parity of floor(x/s) + floor(y/s) + floor(z/s) (cells of side `scale`).
- NOISE: value noise at p / scale: `_lattice` hashes the integer corners, smoothstep-weighted trilinear blend.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit, prange

from taskonomy.scenes.scene import BOX, CYLINDER, N_ROOM_FACES, SPHERE, TEX_CHECKER, TEX_NOISE, TEX_STRIPES, \
    Buffers, Camera, Scene

__all__ = ["render"]

EPS_SHADOW = 1e-6  # shadow ray origin offset along the normal, metres
_INV_SQRT3 = 1.0 / np.sqrt(3.0)
# object record columns (float64): shape, centre xyz, half sizes xyz, cos/sin yaw, r^2, 1/r
_NF = 11


@njit(cache=True, inline="always")
def _lattice(ix, iy, iz):
    """Deterministic hash of an integer lattice point -> [0, 1) (32-bit mix kept inside int64)."""
    h = (ix * 1619 + iy * 31337 + iz * 6971 + 1013) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (((h >> 16) ^ h) * 0x45D9F3B) & 0xFFFFFFFF
    h = (h >> 16) ^ h
    return h * (1.0 / 4294967296.0)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _hit_object(objs, sc, k, ox, oy, oz, dx, dy, dz):
    """(t_near, t_far, code) of a ray against object k of scene sc; code: box face axis, cylinder 0 side / 1 cap."""
    shape = objs[sc, k, 0]
    cx, cy, cz = ox - objs[sc, k, 1], oy - objs[sc, k, 2], oz - objs[sc, k, 3]
    if shape == SPHERE:
        b = cx * dx + cy * dy + cz * dz
        disc = b * b - (cx * cx + cy * cy + cz * cz - objs[sc, k, 9])
        if disc < 0.0:
            return np.inf, -np.inf, 0
        sq = np.sqrt(disc)
        return -b - sq, -b + sq, 0
    if shape == CYLINDER:
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
        h = objs[sc, k, 6]
        if dz != 0.0:
            z0, z1 = (-h - cz) / dz, (h - cz) / dz
            if z0 > z1:
                z0, z1 = z1, z0
        elif abs(cz) <= h:
            z0, z1 = -np.inf, np.inf
        else:
            return np.inf, -np.inf, 0
        if z0 > t0:
            return z0, min(t1, z1), 1
        return t0, min(t1, z1), 0
    # box: into its frame (rotate by -yaw about z around the centre), then the slab test
    co, si = objs[sc, k, 7], objs[sc, k, 8]
    lx, ly = co * cx + si * cy, -si * cx + co * cy
    ldx, ldy = co * dx + si * dy, -si * dx + co * dy
    tn, tf, axis = -np.inf, np.inf, 0
    for a in range(3):
        o = lx if a == 0 else (ly if a == 1 else cz)
        d = ldx if a == 0 else (ldy if a == 1 else dz)
        h = objs[sc, k, 4 + a]
        if d == 0.0:
            if abs(o) > h:
                return np.inf, -np.inf, 0
            continue
        inv = 1.0 / d
        t0, t1 = (-h - o) * inv, (h - o) * inv
        if t0 > t1:
            t0, t1 = t1, t0
        if t0 > tn:
            tn, axis = t0, a
        if t1 < tf:
            tf = t1
    return tn, tf, axis


@njit(cache=True)
def _object_normal(rec, code, px, py, pz, dx, dy, dz):
    """Outward unit normal at a hit point (before facing it to the camera)."""
    shape = rec[0]
    if shape == SPHERE:
        nx, ny, nz = px - rec[1], py - rec[2], pz - rec[3]
    elif shape == CYLINDER:
        if code == 1:
            return 0.0, 0.0, -1.0 if dz > 0.0 else 1.0
        nx, ny, nz = px - rec[1], py - rec[2], 0.0
    else:
        co, si = rec[7], rec[8]
        if code == 2:
            return 0.0, 0.0, -1.0 if dz > 0.0 else 1.0
        ld = co * dx + si * dy if code == 0 else -si * dx + co * dy
        s = -1.0 if ld > 0.0 else 1.0
        if code == 0:
            return s * co, s * si, 0.0
        return -s * si, s * co, 0.0
    inv = 1.0 / np.sqrt(nx * nx + ny * ny + nz * nz)
    return nx * inv, ny * inv, nz * inv


@njit(cache=True)
def _occluded(objs, sc, n_obj, ox, oy, oz, dx, dy, dz, dist):
    """Whether the segment o + t d, 0 < t < dist, meets any object (the room cannot occlude)."""
    for k in range(n_obj):
        tn, tf, _ = _hit_object(objs, sc, k, ox, oy, oz, dx, dy, dz)
        if max(tn, 0.0) < min(tf, dist):
            return True
    return False


@njit(parallel=True, cache=True)
def _render_kernel(cams, view_scene, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_inv_scale,
                   lights, n_lights, ambient, size, full,
                   rgb, depth_z, depth_e, position, normal, albedo, shading, surface, semantic, curvature):
    n_views = cams.shape[0]
    half = 0.5 * size
    for job in prange(n_views * size):
        b, v = job // size, job % size
        sc = view_scene[b]
        cam = cams[b]
        ox, oy, oz, f = cam[0], cam[1], cam[2], cam[12]
        W, D, H = rooms[sc, 0], rooms[sc, 1], rooms[sc, 2]
        k_obj = n_obj[sc]
        yc = (v + 0.5 - half) / f
        for u in range(size):
            xc = (u + 0.5 - half) / f
            dx = cam[3] * xc + cam[4] * yc + cam[5]
            dy = cam[6] * xc + cam[7] * yc + cam[8]
            dz = cam[9] * xc + cam[10] * yc + cam[11]
            inv_len = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
            dx, dy, dz = dx * inv_len, dy * inv_len, dz * inv_len
            # the room from inside: the nearest of the three planes the ray is heading to
            t, surf = np.inf, 0
            if dz < 0.0:
                t, surf = -oz / dz, 0
            elif dz > 0.0:
                t, surf = (H - oz) / dz, 1
            if dx < 0.0 and -ox / dx < t:
                t, surf = -ox / dx, 2
            elif dx > 0.0 and (W - ox) / dx < t:
                t, surf = (W - ox) / dx, 3
            if dy < 0.0 and -oy / dy < t:
                t, surf = -oy / dy, 4
            elif dy > 0.0 and (D - oy) / dy < t:
                t, surf = (D - oy) / dy, 5
            code = 0
            for k in range(k_obj):
                tn, tf, c = _hit_object(objs, sc, k, ox, oy, oz, dx, dy, dz)
                if tn <= tf and 0.0 < tn < t:
                    t, surf, code = tn, N_ROOM_FACES + k, c
            px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
            k1 = k2 = 0.0
            if surf < N_ROOM_FACES:
                # exact plane coordinates keep solid textures free of parity flips at z = 0, x = W, ...
                nx = ny = nz = 0.0
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
                else:
                    py, ny = D, -1.0
            else:
                rec = objs[sc, surf - N_ROOM_FACES]
                nx, ny, nz = _object_normal(rec, code, px, py, pz, dx, dy, dz)
                if rec[0] == SPHERE:
                    k1 = k2 = rec[10]
                elif rec[0] == CYLINDER and code == 0:
                    k1 = rec[10]
            if nx * dx + ny * dy + nz * dz > 0.0:
                nx, ny, nz = -nx, -ny, -nz
            w = _texture_weight(tex_kind[sc, surf], surf, tex_inv_scale[sc, surf], px, py, pz)
            col = tex_col[sc, surf]
            ar, ag, ab = col[0] + (col[3] - col[0]) * w, col[1] + (col[4] - col[1]) * w, col[2] + (col[5] - col[2]) * w
            shade = ambient[sc]
            sx, sy, sz = px + EPS_SHADOW * nx, py + EPS_SHADOW * ny, pz + EPS_SHADOW * nz
            for li in range(n_lights[sc]):
                lx, ly, lz = lights[sc, li, 0] - px, lights[sc, li, 1] - py, lights[sc, li, 2] - pz
                d2 = lx * lx + ly * ly + lz * lz
                dist = np.sqrt(d2)
                ndl = (nx * lx + ny * ly + nz * lz) / dist
                if ndl <= 0.0:
                    continue  # facing away: no shadow ray needed
                if _occluded(objs, sc, k_obj, sx, sy, sz, lx / dist, ly / dist, lz / dist, dist):
                    continue
                shade += lights[sc, li, 3] * ndl / max(d2, 0.25)
            gamma = 1.0 / 2.2
            rgb[b, v, u, 0] = min(max((ar * shade) ** gamma, 0.0), 1.0)
            rgb[b, v, u, 1] = min(max((ag * shade) ** gamma, 0.0), 1.0)
            rgb[b, v, u, 2] = min(max((ab * shade) ** gamma, 0.0), 1.0)
            depth_e[b, v, u] = t
            depth_z[b, v, u] = t * inv_len  # the unnormalised direction has unit forward component
            position[b, v, u, 0], position[b, v, u, 1], position[b, v, u, 2] = px, py, pz
            if not full:
                continue
            normal[b, v, u, 0], normal[b, v, u, 1], normal[b, v, u, 2] = nx, ny, nz
            albedo[b, v, u, 0], albedo[b, v, u, 1], albedo[b, v, u, 2] = ar, ag, ab
            shading[b, v, u] = shade
            surface[b, v, u] = surf
            semantic[b, v, u] = 1 if surf < N_ROOM_FACES else obj_class[sc, surf - N_ROOM_FACES]
            curvature[b, v, u, 0], curvature[b, v, u, 1] = k1, k2


def _pack_scenes(scenes: Sequence[Scene]):
    """Flat padded float64/int arrays of distinct scenes (by identity) and each view's scene index."""
    index: dict[int, int] = {}
    unique: list[Scene] = []
    view_scene = np.empty(len(scenes), np.int64)
    for i, s in enumerate(scenes):
        j = index.setdefault(id(s), len(unique))
        if j == len(unique):
            unique.append(s)
        view_scene[i] = j
    n = len(unique)
    k_max = max(1, max(s.n_objects for s in unique))
    l_max = max(1, max(s.light_pos.shape[0] for s in unique))
    rooms = np.empty((n, 3))
    objs = np.zeros((n, k_max, _NF))
    n_obj = np.zeros(n, np.int64)
    obj_class = np.zeros((n, k_max), np.int64)
    tex_kind = np.zeros((n, N_ROOM_FACES + k_max), np.int64)
    tex_col = np.zeros((n, N_ROOM_FACES + k_max, 6))
    tex_inv_scale = np.ones((n, N_ROOM_FACES + k_max))
    lights = np.zeros((n, l_max, 4))
    n_lights = np.zeros(n, np.int64)
    ambient = np.empty(n)
    for j, s in enumerate(unique):
        k, m = s.n_objects, N_ROOM_FACES + s.n_objects
        rooms[j] = s.room
        rec = objs[j, :k]
        rec[:, 0] = s.obj_shape
        rec[:, 1:4] = s.obj_center
        rec[:, 4:7] = s.obj_size
        rec[:, 7], rec[:, 8] = np.cos(s.obj_yaw), np.sin(s.obj_yaw)
        rec[:, 9], rec[:, 10] = s.obj_size[:, 0] ** 2, 1.0 / s.obj_size[:, 0]
        n_obj[j] = k
        obj_class[j, :k] = s.obj_class
        tex_kind[j, :m] = s.tex_kind
        tex_col[j, :m] = s.tex_color.reshape(m, 6)
        tex_inv_scale[j, :m] = 1.0 / s.tex_scale
        n_lights[j] = s.light_pos.shape[0]
        lights[j, : n_lights[j], :3] = s.light_pos
        lights[j, : n_lights[j], 3] = s.light_power
        ambient[j] = s.ambient
    return view_scene, rooms, objs, n_obj, obj_class, tex_kind, tex_col, tex_inv_scale, lights, n_lights, ambient


def _pack_cameras(cameras: Sequence[Camera], size: int) -> np.ndarray:
    cams = np.empty((len(cameras), 13))
    for i, c in enumerate(cameras):
        cams[i, :3] = c.position
        cams[i, 3:12] = np.asarray(c.rotation, np.float64).reshape(9)
        cams[i, 12] = c.focal(size)
    return cams


def render(scenes: Sequence[Scene], cameras: Sequence[Camera], size: int, full: bool = True) -> Buffers:
    """Ray-cast view i of `scenes[i]` from `cameras[i]` at size x size pixels (Numba, parallel over rows).

    full=False fills only rgb, depth_z, depth_euclid and position (bit-identical to full=True); the other
    arrays come back zero-filled. Scenes repeated by identity in `scenes` are packed once.
    """
    if len(scenes) != len(cameras):
        raise ValueError(f"render: expected one camera per scene, got {len(scenes)} scenes and {len(cameras)} cameras")
    if int(size) < 1:
        raise ValueError(f"render: expected a positive image size, got {size}")
    size, n = int(size), len(cameras)
    f32 = np.float32
    rgb, pos = np.empty((n, size, size, 3), f32), np.empty((n, size, size, 3), f32)
    depth_z, depth_e = np.empty((n, size, size), f32), np.empty((n, size, size), f32)
    shape = (n, size, size) if full else (0, 0, 0)  # the kernel skips them when not full
    normal, albedo = np.zeros(shape + (3,), f32), np.zeros(shape + (3,), f32)
    shading, surface = np.zeros(shape, f32), np.zeros(shape, np.int32)
    semantic, curvature = np.zeros(shape, np.uint8), np.zeros(shape + (2,), f32)
    if n:
        packed = _pack_scenes(scenes)
        _render_kernel(_pack_cameras(cameras, size), *packed, size, bool(full),
                       rgb, depth_z, depth_e, pos, normal, albedo, shading, surface, semantic, curvature)
    if not full:
        full_shape = (n, size, size)
        normal, albedo = np.zeros(full_shape + (3,), f32), np.zeros(full_shape + (3,), f32)
        shading, surface = np.zeros(full_shape, f32), np.zeros(full_shape, np.int32)
        semantic, curvature = np.zeros(full_shape, np.uint8), np.zeros(full_shape + (2,), f32)
    return Buffers(rgb, depth_z, depth_e, pos, normal, albedo, shading, surface, semantic, curvature)
