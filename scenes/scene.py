"""Procedural indoor scenes and cameras: plain arrays that the ray caster reads (DESIGN.md section 4).

World frame: x, y span the floor, z points up; the room is the box [0, W] x [0, D] x [0, H].
Camera frame (OpenCV): x right, y down, z forward; `rotation` maps camera to world coordinates
(its columns are the camera axes in world coordinates), so X_world = rotation @ X_cam + position.
A pixel (u, v) of an S x S image looks along ((u + 0.5 - S/2) / f, (v + 0.5 - S/2) / f, 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from taskonomy.tasks import OBJECT_CLASSES, ROOM_TYPES

__all__ = [
    "Buffers", "BOX", "CYLINDER", "SPHERE", "TEX_CHECKER", "TEX_NOISE", "TEX_PLAIN", "TEX_STRIPES", "N_ROOM_FACES",
    "Camera", "Scene", "look_at", "pair_cameras", "sample_camera", "sample_scene",
]

BOX, SPHERE, CYLINDER = 0, 1, 2  # object shapes
TEX_PLAIN, TEX_STRIPES, TEX_CHECKER, TEX_NOISE = 0, 1, 2, 3  # solid textures, evaluated at world points
N_ROOM_FACES = 6  # surfaces 0..5: floor, ceiling, wall x=0, wall x=W, wall y=0, wall y=D; then objects

# class -> (shape, half-extent ranges (min xyz, max xyz) in metres, texture kind, base colour)
_CLASS_SPEC = {
    "bed": (BOX, (0.7, 0.9, 0.22), (1.0, 1.1, 0.3), TEX_CHECKER, (0.75, 0.72, 0.85)),
    "sofa": (BOX, (0.8, 0.35, 0.35), (1.1, 0.5, 0.45), TEX_PLAIN, (0.55, 0.25, 0.2)),
    "table": (BOX, (0.45, 0.35, 0.35), (0.7, 0.5, 0.4), TEX_STRIPES, (0.55, 0.38, 0.2)),
    "cabinet": (BOX, (0.25, 0.2, 0.7), (0.4, 0.3, 1.0), TEX_PLAIN, (0.85, 0.85, 0.8)),
    "chair": (BOX, (0.2, 0.2, 0.4), (0.28, 0.28, 0.5), TEX_PLAIN, (0.2, 0.35, 0.6)),
    "lamp": (CYLINDER, (0.08, 0.08, 0.6), (0.14, 0.14, 0.85), TEX_PLAIN, (0.95, 0.85, 0.4)),
    "plant": (SPHERE, (0.25, 0.25, 0.25), (0.42, 0.42, 0.42), TEX_NOISE, (0.2, 0.6, 0.2)),
    "ball": (SPHERE, (0.1, 0.1, 0.1), (0.22, 0.22, 0.22), TEX_STRIPES, (0.9, 0.3, 0.25)),
}
assert tuple(_CLASS_SPEC) == OBJECT_CLASSES

# room type -> relative frequency of each object class (order of OBJECT_CLASSES) and wall/floor palettes
_ROOM_SPEC = {
    "bedroom": ((5, 0, 1, 3, 1, 3, 2, 0), ((0.85, 0.75, 0.7), (0.7, 0.78, 0.9)), ((0.5, 0.35, 0.2), TEX_STRIPES)),
    "living_room": ((0, 5, 3, 1, 1, 2, 3, 1), ((0.9, 0.88, 0.78), (0.75, 0.85, 0.75)), ((0.45, 0.3, 0.2), TEX_STRIPES)),
    "kitchen": ((0, 0, 4, 5, 3, 1, 1, 0), ((0.95, 0.95, 0.9), (0.9, 0.9, 0.75)), ((0.8, 0.8, 0.8), TEX_CHECKER)),
    "office": ((0, 0, 4, 3, 4, 2, 1, 0), ((0.8, 0.8, 0.82), (0.7, 0.72, 0.78)), ((0.35, 0.38, 0.42), TEX_NOISE)),
    "playroom": ((0, 1, 2, 1, 2, 0, 1, 6), ((0.95, 0.85, 0.5), (0.6, 0.85, 0.95)), ((0.4, 0.6, 0.4), TEX_NOISE)),
}
assert tuple(_ROOM_SPEC) == ROOM_TYPES


@dataclass(frozen=True)
class Scene:
    """One room. Surface arrays have N_ROOM_FACES + n_objects rows: the room faces first, then objects."""

    room: np.ndarray  # (3,) float64: W, D, H
    room_type: int  # index into ROOM_TYPES
    obj_shape: np.ndarray  # (K,) int32: BOX, SPHERE or CYLINDER
    obj_center: np.ndarray  # (K, 3) float64
    # (K, 3) float64: box half-extents in its own frame; sphere (r, r, r); cylinder (r, r, half-height)
    obj_size: np.ndarray
    obj_yaw: np.ndarray  # (K,) float64: rotation of a box about the vertical axis, radians (0 for the others)
    obj_class: np.ndarray  # (K,) int32: semantic class, 2 + index into OBJECT_CLASSES
    tex_kind: np.ndarray  # (6 + K,) int32: TEX_*
    tex_color: np.ndarray  # (6 + K, 2, 3) float64: the texture's two albedos in [0, 1]
    tex_scale: np.ndarray  # (6 + K,) float64: pattern period in metres
    light_pos: np.ndarray  # (L, 3) float64: point lights
    light_power: np.ndarray  # (L,) float64: irradiance at 1 m, facing the light
    ambient: float  # shading added everywhere

    @property
    def n_objects(self) -> int:
        return int(self.obj_shape.shape[0])

    @cached_property
    def footprint(self) -> np.ndarray:
        """(K,) radius of each object's bounding circle on the floor."""
        return np.where(self.obj_shape == BOX, np.hypot(self.obj_size[:, 0], self.obj_size[:, 1]), self.obj_size[:, 0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: square image, focal length in pixels for a given image size."""

    position: np.ndarray  # (3,) float64, world
    rotation: np.ndarray  # (3, 3) float64, camera -> world (columns: right, down, forward)
    fov: float  # horizontal field of view, radians

    def focal(self, size: int) -> float:
        return size / (2.0 * np.tan(self.fov / 2.0))

    def forward(self) -> np.ndarray:
        return self.rotation[:, 2]


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera -> world rotation looking from `position` at `target` with z up and the given roll."""
    forward = np.asarray(target, np.float64) - np.asarray(position, np.float64)
    forward /= np.linalg.norm(forward)
    return _rotation(forward, roll)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # np.cross is general (broadcasting, axes) and ~20x slower on two 3-vectors, called per camera
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _rotation(forward: np.ndarray, roll: float) -> np.ndarray:
    right = np.array([forward[1], -forward[0], 0.0])  # forward x up, with up = +z
    norm = np.hypot(right[0], right[1])
    right = right / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
    down = _cross(forward, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    return np.stack([right, down, forward], axis=1)


def _direction(yaw: float, pitch: float) -> np.ndarray:
    return np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])


def _jitter(rng: np.random.Generator, color, amount: float) -> np.ndarray:
    return np.clip(np.asarray(color) + rng.uniform(-amount, amount, 3), 0.03, 0.97)


def sample_scene(rng: np.random.Generator, max_objects: int = 6, n_lights: int = 2) -> Scene:
    """A random box room of a random type with 2..max_objects objects standing on the floor."""
    room_type = int(rng.integers(len(ROOM_TYPES)))
    freq, wall_palette, (floor_color, floor_kind) = _ROOM_SPEC[ROOM_TYPES[room_type]]
    room = np.array([rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5), rng.uniform(2.4, 3.0)])

    wall = _jitter(rng, wall_palette[rng.integers(2)], 0.06)
    wall_kind = int(rng.choice([TEX_PLAIN, TEX_STRIPES, TEX_NOISE]))
    kinds = [floor_kind, TEX_PLAIN] + [wall_kind] * 4
    colors = [(_jitter(rng, floor_color, 0.06), _jitter(rng, floor_color, 0.06) * 0.75),
              (np.full(3, 0.92), np.full(3, 0.92))]
    colors += [(wall, wall * rng.uniform(0.8, 0.92))] * 4
    scales = [rng.uniform(0.25, 0.6), 1.0] + [rng.uniform(0.15, 0.5)] * 4

    p = np.asarray(freq, np.float64) / np.sum(freq)
    shapes, centers, sizes, yaws, classes, footprints = [], [], [], [], [], []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        k = int(rng.choice(len(OBJECT_CLASSES), p=p))
        shape, lo, hi, kind, base = _CLASS_SPEC[OBJECT_CLASSES[k]]
        size = rng.uniform(lo, hi)
        if shape != BOX:
            size[1] = size[0]
            if shape == SPHERE:
                size[:] = size[0]
        radius = float(np.hypot(size[0], size[1])) if shape == BOX else float(size[0])
        for _attempt in range(20):  # rejection sampling: footprints (bounding circles) must not overlap
            xy = rng.uniform(radius + 0.05, room[:2] - radius - 0.05)
            if all(np.hypot(*(xy - c[:2])) > radius + r + 0.05 for c, r in zip(centers, footprints)):
                break
        else:
            continue
        shapes.append(shape)
        centers.append(np.array([xy[0], xy[1], size[2]]))
        sizes.append(size)
        yaws.append(rng.uniform(0, np.pi) if shape == BOX else 0.0)
        classes.append(2 + k)
        footprints.append(radius)
        color = _jitter(rng, base, 0.12)
        kinds.append(kind)
        colors.append((color, color * rng.uniform(0.45, 0.7)))
        scales.append(rng.uniform(0.08, 0.2))

    light_xy = rng.uniform(0.6, room[:2] - 0.6, size=(n_lights, 2))
    light_pos = np.column_stack([light_xy, np.full(n_lights, room[2] - 0.25)])
    return Scene(
        room=room, room_type=room_type,
        obj_shape=np.array(shapes, np.int32), obj_center=np.array(centers, np.float64).reshape(-1, 3),
        obj_size=np.array(sizes, np.float64).reshape(-1, 3), obj_yaw=np.array(yaws, np.float64),
        obj_class=np.array(classes, np.int32),
        tex_kind=np.array(kinds, np.int32), tex_color=np.array(colors, np.float64),
        tex_scale=np.array(scales, np.float64),
        # total power ~2 split over the lights: a wall 2 m from a light gets ~0.5 (no clipping after albedo)
        light_pos=light_pos, light_power=rng.uniform(1.4, 2.6, n_lights) / n_lights,
        ambient=float(rng.uniform(0.12, 0.22)),
    )


def _free_position(scene: Scene, rng: np.random.Generator, near: np.ndarray | None = None,
                   radius: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A camera position inside the room, away from walls and objects (optionally near a point)."""
    lo = np.array([0.4, 0.4, 1.0])
    hi = np.array([scene.room[0] - 0.4, scene.room[1] - 0.4, min(1.8, scene.room[2] - 0.4)])
    for _attempt in range(50):
        if near is None:
            p = rng.uniform(lo, hi)
        else:
            step = rng.normal(size=3)
            step *= rng.uniform(*radius) / np.linalg.norm(step)
            p = np.clip(near + step, lo, hi)
        clear = np.hypot(p[0] - scene.obj_center[:, 0], p[1] - scene.obj_center[:, 1]) - scene.footprint
        if clear.size == 0 or clear.min() > 0.25:
            return p
    return p


def sample_camera(scene: Scene, rng: np.random.Generator, fov: float) -> Camera:
    """A camera at eye height somewhere free in the room, looking level-ish.

    Most cameras turn towards a random object (with jitter), as a person photographing a room would;
    the rest look in a random direction, so that bare walls and corners are seen too.
    """
    position = _free_position(scene, rng)
    if scene.n_objects and rng.random() < 0.75:
        target = scene.obj_center[rng.integers(scene.n_objects)]
        delta = target - position
        yaw = np.arctan2(delta[1], delta[0]) + rng.uniform(-0.35, 0.35)
        pitch = np.clip(np.arctan2(delta[2], np.hypot(delta[0], delta[1])) + rng.uniform(-0.1, 0.15), -0.6, 0.05)
    else:
        yaw, pitch = rng.uniform(0, 2 * np.pi), rng.uniform(-0.45, 0.05)
    return Camera(position, _rotation(_direction(yaw, pitch), rng.uniform(-0.06, 0.06)), fov)


def pair_cameras(scene: Scene, camera: Camera, points: np.ndarray, rng: np.random.Generator) -> dict[str, Camera]:
    """Second views for the multi-view tasks, given the first view's world points (S, S, 3) per pixel.

    egomotion: a small step; fixated_pose: fixates the 3D point at the first view's centre from elsewhere;
    nonfixated_pose: a nearby camera turned freely; point_matching: fixates the same centre point or,
    half of the time, another point of the first view (its label is decided from the rendered buffers).
    """
    size = points.shape[0]
    centre = points[size // 2, size // 2]
    yaw = np.arctan2(camera.forward()[1], camera.forward()[0])
    pitch = np.arcsin(np.clip(camera.forward()[2], -1, 1))

    ego_pos = _free_position(scene, rng, camera.position, (0.05, 0.3))
    ego = Camera(ego_pos, _rotation(_direction(yaw + rng.uniform(-0.17, 0.17), pitch + rng.uniform(-0.08, 0.08)),
                                    rng.uniform(-0.04, 0.04)), camera.fov)

    fix_pos = _free_position(scene, rng, camera.position, (0.4, 1.2))
    fixated = Camera(fix_pos, look_at(fix_pos, centre, rng.uniform(-0.06, 0.06)), camera.fov)

    free_pos = _free_position(scene, rng, camera.position, (0.2, 0.8))
    free = Camera(free_pos, _rotation(_direction(yaw + rng.uniform(-0.5, 0.5), rng.uniform(-0.45, 0.05)),
                                      rng.uniform(-0.06, 0.06)), camera.fov)

    if rng.random() < 0.5:
        target = centre
    else:  # another pixel of the first view, at least a quarter of the image away from the centre
        u, v = rng.integers(0, size, 2)
        while max(abs(u - size // 2), abs(v - size // 2)) < size // 4:
            u, v = rng.integers(0, size, 2)
        target = points[v, u]
    match_pos = _free_position(scene, rng, camera.position, (0.4, 1.2))
    match = Camera(match_pos, look_at(match_pos, target, rng.uniform(-0.06, 0.06)), camera.fov)
    return {"egomotion": ego, "fixated_pose": fixated, "nonfixated_pose": free, "point_matching": match}


class Buffers(NamedTuple):
    """What the ray caster keeps per pixel, for a batch of B views of size S (all C-contiguous)."""

    rgb: np.ndarray  # (B, S, S, 3) float32 in [0, 1]: albedo * shading, gamma 1/2.2, clipped
    depth_z: np.ndarray  # (B, S, S) float32: depth along the optical axis, metres
    depth_euclid: np.ndarray  # (B, S, S) float32: distance from the camera centre, metres
    position: np.ndarray  # (B, S, S, 3) float32: world point hit by the pixel's ray
    normal: np.ndarray  # (B, S, S, 3) float32: unit world normal, facing the camera
    albedo: np.ndarray  # (B, S, S, 3) float32: the surface texture's colour at the hit point
    shading: np.ndarray  # (B, S, S) float32: ambient + sum of lights * cos / d^2, shadows included (linear)
    surface: np.ndarray  # (B, S, S) int32: surface index (0..5 room faces, 6 + k object k)
    semantic: np.ndarray  # (B, S, S) uint8: 1 background (room faces), else the object's class
    curvature: np.ndarray  # (B, S, S, 2) float32: principal curvatures k1 >= k2 (1/m, convex positive)
