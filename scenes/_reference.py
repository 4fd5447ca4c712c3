"""Plain NumPy ray caster: the oracle for the Numba kernel in `render.py`, and the baseline of its benchmark.

Written from the same specification, not translated from the kernel: rays are vectorised over the pixels of
one view (a Python loop over views), the room is six planes, a box is six bounded face planes, a cylinder a
side and two discs. Conventions (surface order, stripe directions, noise hash) are those of `render.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taskonomy.scenes.scene import CYLINDER, N_ROOM_FACES, SPHERE, TEX_CHECKER, TEX_NOISE, TEX_STRIPES, Buffers, \
    Camera, Scene

__all__ = ["render_reference"]

EPS_SHADOW = 1e-6  # shadow ray origin offset along the normal, metres
_GAMMA = 1.0 / 2.2
_EDGE = 1e-9  # face-bound slack so that a ray through an edge is never lost between two faces
# Buffers fields in order: channels and dtype per pixel
_FIELDS = ((3, np.float32), (1, np.float32), (1, np.float32), (3, np.float32), (3, np.float32), (3, np.float32),
           (1, np.float32), (1, np.int32), (1, np.uint8), (2, np.float32))


def _rays(camera: Camera, size: int) -> np.ndarray:
    """(S*S, 3) unit world directions, row-major over (v, u)."""
    f = camera.focal(size)
    v, u = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    cam_dirs = np.stack([(u + 0.5 - size / 2) / f, (v + 0.5 - size / 2) / f, np.ones_like(u, float)], -1)
    world = cam_dirs.reshape(-1, 3) @ np.asarray(camera.rotation, np.float64).T
    return world / np.linalg.norm(world, axis=1, keepdims=True)


def _room_planes(room: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(point, inward normal) of the faces in surface order: floor, ceiling, x=0, x=W, y=0, y=D."""
    W, D, H = room
    return [((0, 0, 0), (0, 0, 1)), ((0, 0, H), (0, 0, -1)), ((0, 0, 0), (1, 0, 0)),
            ((W, 0, 0), (-1, 0, 0)), ((0, 0, 0), (0, 1, 0)), ((0, D, 0), (0, -1, 0))]


def _plane_t(origin: np.ndarray, dirs: np.ndarray, point, normal) -> np.ndarray:
    """Ray parameter where rays meet a plane from its front side; inf where they do not."""
    point, normal = np.asarray(point, float), np.asarray(normal, float)
    denom = dirs @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((point - origin) @ normal if origin.ndim == 1 else np.sum((point - origin) * normal, -1)) / denom
    return np.where((denom < 0) & (t > 0), t, np.inf)


def _yaw_matrix(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _hit_sphere(o, d, center, r):
    """Nearest positive hit of rays o + t d on a sphere: t (inf: miss) and the outward normal."""
    oc = o - center
    b = np.sum(oc * d, -1)
    c = np.sum(oc * oc, -1) - r * r
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = -b - root, -b + root
    t = np.where(disc < 0, np.inf, np.where(near > 0, near, np.where(far > 0, far, np.inf)))
    with np.errstate(invalid="ignore"):
        n = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d - center) / r
    return t, n


def _hit_box(o, d, center, half, yaw):
    """Nearest positive hit on a yawed box, face by face in the box frame; t and outward normal."""
    rot = _yaw_matrix(yaw)  # box -> world
    lo, ld = (o - center) @ rot, d @ rot  # rows times rot = rot.T applied: world -> box
    lo = np.broadcast_to(lo, ld.shape)
    best, normal = np.full(len(ld), np.inf), np.zeros((len(ld), 3))
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (sign * half[axis] - lo[:, axis]) / ld[:, axis]
            q = lo + t[:, None] * ld
            inside = np.all(np.abs(q[:, others]) <= half[others] * (1 + _EDGE) + _EDGE, axis=1)
            take = (t > 0) & inside & (t < best)
            best = np.where(take, t, best)
            normal[take] = sign * rot[:, axis]
    return best, normal


def _hit_cylinder(o, d, center, r, h):
    """Nearest positive hit on a vertical capped cylinder (side, two caps); t and outward normal."""
    oc = np.broadcast_to(o - center, d.shape)
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = oc[:, 0] * d[:, 0] + oc[:, 1] * d[:, 1]
    c = oc[:, 0] ** 2 + oc[:, 1] ** 2 - r * r
    disc = b * b - a * c
    best, normal = np.full(len(d), np.inf), np.zeros((len(d), 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        for sign in (-1.0, 1.0):  # side: both roots, z within the height
            t = (-b + sign * np.sqrt(np.maximum(disc, 0.0))) / a
            z = oc[:, 2] + t * d[:, 2]
            take = (disc >= 0) & (a > 0) & (t > 0) & (np.abs(z) <= h) & (t < best)
            best = np.where(take, t, best)
            q = oc + np.where(take, t, 0.0)[:, None] * d
            normal[take] = np.column_stack([q[:, 0] / r, q[:, 1] / r, np.zeros(len(d))])[take]
        for sign in (-1.0, 1.0):  # caps: discs at z = +-h
            t = (sign * h - oc[:, 2]) / d[:, 2]
            q = oc + np.where(np.isfinite(t), t, 0.0)[:, None] * d
            take = (t > 0) & (q[:, 0] ** 2 + q[:, 1] ** 2 <= r * r * (1 + _EDGE)) & (t < best)
            best = np.where(take, t, best)
            normal[take] = (0.0, 0.0, sign)
    return best, normal


def _hit_object(scene: Scene, k: int, o, d):
    center, size = scene.obj_center[k], scene.obj_size[k]
    if scene.obj_shape[k] == SPHERE:
        return _hit_sphere(o, d, center, size[0])
    if scene.obj_shape[k] == CYLINDER:
        return _hit_cylinder(o, d, center, size[0], size[2])
    return _hit_box(o, d, center, size, scene.obj_yaw[k])


def _lattice(ix, iy, iz):
    """Integer hash of lattice points -> [0, 1): the 32-bit mix of `render._lattice`."""
    mask = np.int64(0xFFFFFFFF)
    h = (ix * 1619 + iy * 31337 + iz * 6971 + 1013) & mask
    for _ in range(2):
        h = (((h >> 16) ^ h) * 0x45D9F3B) & mask
    return ((h >> 16) ^ h) / 4294967296.0


def _value_noise(q: np.ndarray) -> np.ndarray:
    """Smooth value noise at points q (N, 3): trilinear blend of the corner hashes with smoothstep weights."""
    cell = np.floor(q)
    i = cell.astype(np.int64)
    w = q - cell
    w = w * w * (3 - 2 * w)
    out = np.zeros(len(q))
    for corner in range(8):
        bits = [(corner >> a) & 1 for a in range(3)]
        weight = np.prod([w[:, a] if bits[a] else 1 - w[:, a] for a in range(3)], axis=0)
        out += weight * _lattice(i[:, 0] + bits[0], i[:, 1] + bits[1], i[:, 2] + bits[2])
    return out


def _albedo(scene: Scene, surf: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Solid texture colours at world points p on surfaces surf (the conventions of `render.py`)."""
    kind, scale = scene.tex_kind[surf], scene.tex_scale[surf]
    q = p / scale[:, None]
    # stripes run along x on the floor, ceiling and y walls, along y on the x walls, diagonally on objects
    axis = np.array([[1, 0, 0]] * 2 + [[0, 1, 0]] * 2 + [[1, 0, 0]] * 2, float)
    stripe_dir = np.where((surf < N_ROOM_FACES)[:, None], axis[np.minimum(surf, 5)], np.full(3, 1 / np.sqrt(3)))
    weight = np.zeros(len(p))
    stripes = np.floor(np.sum(p * stripe_dir, 1) / scale).astype(np.int64) & 1
    checker = np.sum(np.floor(q).astype(np.int64), 1) & 1
    weight = np.where(kind == TEX_STRIPES, stripes, weight)
    weight = np.where(kind == TEX_CHECKER, checker, weight)
    noisy = kind == TEX_NOISE
    weight[noisy] = _value_noise(q[noisy])
    c0, c1 = scene.tex_color[surf, 0], scene.tex_color[surf, 1]
    return c0 + (c1 - c0) * weight[:, None]


def _shading(scene: Scene, p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """ambient + sum_lights power * max(0, n.l) / max(d^2, 0.25) * visible (shadow rays against objects)."""
    shade = np.full(len(p), float(scene.ambient))
    for light, power in zip(scene.light_pos, scene.light_power):
        to_light = light - p
        d2 = np.sum(to_light ** 2, 1)
        dist = np.sqrt(d2)
        l_dir = to_light / dist[:, None]
        cos = np.sum(n * l_dir, 1)
        visible = cos > 0
        start = p + EPS_SHADOW * n
        for k in range(scene.n_objects):
            idx = np.nonzero(visible)[0]
            t, _ = _hit_object(scene, k, start[idx], l_dir[idx])
            visible[idx[t < dist[idx]]] = False
        shade += np.where(visible, power * cos / np.maximum(d2, 0.25), 0.0)
    return shade


def _render_view(scene: Scene, camera: Camera, size: int) -> dict[str, np.ndarray]:
    o = np.asarray(camera.position, np.float64)
    d = _rays(camera, size)
    n_px = len(d)
    ts = [_plane_t(o, d, q, nrm) for q, nrm in _room_planes(scene.room)]
    normals = [np.broadcast_to(np.asarray(nrm, float), (n_px, 3)) for _, nrm in _room_planes(scene.room)]
    for k in range(scene.n_objects):
        t, nrm = _hit_object(scene, k, o, d)
        ts.append(t)
        normals.append(nrm)
    surf = np.argmin(np.stack(ts), axis=0)  # ties: the lower surface index
    t = np.stack(ts)[surf, np.arange(n_px)]
    n = np.stack(normals)[surf, np.arange(n_px)]
    n = np.where((np.sum(n * d, 1) > 0)[:, None], -n, n)
    p = o + t[:, None] * d
    # points on the room's faces lie exactly on their planes
    for face, (axis, value) in enumerate([(2, 0.0), (2, scene.room[2]), (0, 0.0), (0, scene.room[0]),
                                          (1, 0.0), (1, scene.room[1])]):
        p[surf == face, axis] = value
    k = surf - N_ROOM_FACES
    is_obj = k >= 0
    shape = np.where(is_obj, scene.obj_shape[np.maximum(k, 0)] if scene.n_objects else -1, -1)
    inv_r = np.where(is_obj, 1.0 / scene.obj_size[np.maximum(k, 0), 0] if scene.n_objects else 0.0, 0.0)
    curvature = np.zeros((n_px, 2))
    curvature[shape == SPHERE] = inv_r[shape == SPHERE, None]
    side = (shape == CYLINDER) & (np.abs(n[:, 2]) < 0.5)
    curvature[side, 0] = inv_r[side]
    albedo = _albedo(scene, surf, p)
    shading = _shading(scene, p, n)
    semantic = np.where(is_obj, scene.obj_class[np.maximum(k, 0)] if scene.n_objects else 1, 1)
    return dict(rgb=np.clip((albedo * shading[:, None]) ** _GAMMA, 0, 1), depth_z=(p - o) @ camera.forward(),
                depth_euclid=np.linalg.norm(p - o, axis=1), position=p, normal=n, albedo=albedo, shading=shading,
                surface=surf, semantic=semantic, curvature=curvature)


def render_reference(scenes: Sequence[Scene], cameras: Sequence[Camera], size: int, full: bool = True) -> Buffers:
    """The same `Buffers` as `render.render`, view by view in NumPy (slow; for tests and benchmarks).

    full=False zero-fills every array but rgb, depth_z, depth_euclid and position, like `render`.
    """
    if len(scenes) != len(cameras):
        raise ValueError(f"render_reference: expected one camera per scene, got {len(scenes)} and {len(cameras)}")
    views = [_render_view(s, c, size) for s, c in zip(scenes, cameras)]
    out = []
    for field, (channels, dtype) in zip(Buffers._fields, _FIELDS):
        shape = (len(views), size, size) + ((channels,) if channels > 1 else ())
        if views and (full or field in ("rgb", "depth_z", "depth_euclid", "position")):
            out.append(np.ascontiguousarray(np.stack([v[field] for v in views]).reshape(shape).astype(dtype)))
        else:
            out.append(np.zeros(shape, dtype))
    return Buffers(*out)

