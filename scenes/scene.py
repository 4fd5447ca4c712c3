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


@dataclass(frozen=True)
class Scene:
    """One room. Surface arrays have N_ROOM_FACES + K rows: the room faces first, then the K primitives
    ("objects" to the renderer: furniture is made of several, columns are one each with class 1)."""

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
    # (K,) int32: the piece of furniture each primitive belongs to (-1: a column, part of the room);
    # None: every primitive is an object of its own
    obj_group: np.ndarray | None = None

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


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour from hue (turns), saturation, value."""
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# Hue of each texture kind (centre, half-width, in turns): a surface's hue follows its pattern, which the
# luma shows, and nothing else. So colorization has something to learn from the gray image (with hues drawn
# freely its network could not beat the marginal chroma: ratio 1.00), while colour still tells neither the
# room type nor the object class (kinds are drawn independently of both).
_KIND_HUE = {TEX_PLAIN: (0.12, 0.05), TEX_STRIPES: (0.01, 0.04), TEX_CHECKER: (0.6, 0.05), TEX_NOISE: (0.35, 0.05)}


def _material(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float],
              kinds: tuple[int, ...]) -> tuple[int, tuple[np.ndarray, np.ndarray], float]:
    """A texture kind, its two albedos (the kind's hue; the second darker or a second shade) and its scale.

    Room faces and objects all draw from this one function: nothing of a surface's look depends on the
    room type or on the object class, so colour tells neither (the issue's class_scene from wall tint).
    """
    kind = int(kinds[rng.integers(len(kinds))])
    centre, spread = _KIND_HUE[kind]
    c0 = _hsv((centre + rng.uniform(-spread, spread)) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    if rng.random() < 0.7:
        c1 = c0 * rng.uniform(0.45, 0.8)
    else:
        c1 = _hsv((centre + rng.uniform(-spread, spread)) % 1.0, rng.uniform(*sat), rng.uniform(*val))
    return kind, (np.clip(c0, 0.03, 0.97), np.clip(c1, 0.03, 0.97)), float(rng.uniform(0.08, 0.45))


def _class_material(rng: np.random.Generator, k: int) -> tuple[int, tuple[np.ndarray, np.ndarray], float]:
    """The material of an object of class k in a `class_materials` world: the class's own kind and hue."""
    kind = _ALL_KINDS[k % len(_ALL_KINDS)]
    c0 = _hsv((k / len(OBJECT_CLASSES) + rng.uniform(-0.03, 0.03)) % 1.0, rng.uniform(0.45, 0.8), rng.uniform(0.4, 0.9))
    return kind, (np.clip(c0, 0.03, 0.97), np.clip(c0 * rng.uniform(0.45, 0.7), 0.03, 0.97)), \
        float(rng.uniform(0.08, 0.45))


# Parts of an object: (shape, offset (x, y in the object's frame; z of the part's centre above the floor),
# half sizes). Each class varies in shape (variants) and size; every part carries its object's class.
_Part = tuple[int, tuple[float, float, float], tuple[float, float, float]]


def _bed(rng: np.random.Generator) -> list[_Part]:
    length, width = rng.uniform(0.9, 1.1), rng.uniform(0.45, 0.55) if rng.random() < 0.5 else rng.uniform(0.7, 0.9)
    top, head = rng.uniform(0.35, 0.6), rng.uniform(0.75, 1.2)
    parts = [(BOX, (0.0, 0.0, top / 2), (length, width, top / 2)),
             (BOX, (-length - 0.04, 0.0, head / 2), (0.04, width, head / 2))]
    r, h = rng.uniform(0.14, 0.2), rng.uniform(0.05, 0.08)
    ys = (0.0,) if width < 0.6 else (-width / 2, width / 2)
    return parts + [(CYLINDER, (-length + r + 0.06, y, top + h), (r, r, h)) for y in ys]


def _sofa(rng: np.random.Generator) -> list[_Part]:
    length, depth, seat = rng.uniform(0.6, 1.2), rng.uniform(0.35, 0.5), rng.uniform(0.35, 0.45)
    back, thick, arm = rng.uniform(0.75, 0.95), rng.uniform(0.07, 0.14), rng.uniform(0.5, 0.65)
    parts = [(BOX, (0.0, 0.0, seat / 2), (length, depth, seat / 2)),
             (BOX, (0.0, depth - thick, back / 2), (length, thick, back / 2))]
    if rng.random() < 0.5:  # box arms
        a = rng.uniform(0.07, 0.14)
        return parts + [(BOX, (s * (length + a), 0.0, arm / 2), (a, depth, arm / 2)) for s in (-1, 1)]
    r = rng.uniform(0.12, 0.2)  # round arms
    return parts + [(CYLINDER, (s * (length + r * 0.5), 0.0, arm / 2), (r, r, arm / 2)) for s in (-1, 1)]


def _table(rng: np.random.Generator) -> list[_Part]:
    height, thick = rng.uniform(0.68, 0.8) if rng.random() < 0.75 else rng.uniform(0.35, 0.45), rng.uniform(0.02, 0.04)
    if rng.random() < 0.5:  # round top on a pedestal
        r, leg = rng.uniform(0.3, 0.6), rng.uniform(0.04, 0.09)
        stem = (height - 2 * thick) / 2
        return [(CYLINDER, (0.0, 0.0, height - thick), (r, r, thick)),
                (CYLINDER, (0.0, 0.0, stem), (leg, leg, stem))]
    lx, ly, leg = rng.uniform(0.4, 0.8), rng.uniform(0.3, 0.5), rng.uniform(0.025, 0.045)
    stem = (height - 2 * thick) / 2
    return [(BOX, (0.0, 0.0, height - thick), (lx, ly, thick))] + [
        (CYLINDER, (sx * (lx - leg - 0.04), sy * (ly - leg - 0.04), stem), (leg, leg, stem))
        for sx in (-1, 1) for sy in (-1, 1)]


def _cabinet(rng: np.random.Generator) -> list[_Part]:
    lx, ly, hz = rng.uniform(0.25, 0.6), rng.uniform(0.2, 0.3), rng.uniform(0.35, 1.0)
    if rng.random() < 0.4:  # a round cabinet with a knob
        r, k = rng.uniform(0.22, 0.4), rng.uniform(0.02, 0.035)
        return [(CYLINDER, (0.0, 0.0, hz), (r, r, hz)), (SPHERE, (0.0, -r - k, 1.4 * hz), (k, k, k))]
    parts = [(BOX, (0.0, 0.0, hz), (lx, ly, hz))]
    n, r = int(rng.integers(1, 3)), rng.uniform(0.02, 0.035)
    xs = (0.0,) if n == 1 else (-lx / 3, lx / 3)
    if rng.random() < 0.5:  # bar handles
        return parts + [(CYLINDER, (x, -ly - r, 1.4 * hz), (r, r, min(0.12, 0.3 * hz))) for x in xs]
    return parts + [(SPHERE, (x, -ly - r, 1.4 * hz), (r, r, r)) for x in xs]  # knobs


def _chair(rng: np.random.Generator) -> list[_Part]:
    s, seat, back, t = rng.uniform(0.2, 0.27), rng.uniform(0.42, 0.5), rng.uniform(0.3, 0.5), rng.uniform(0.02, 0.04)
    parts = [(BOX, (0.0, s - t, seat + back / 2), (s, t, back / 2))]
    variant = rng.integers(3)
    if variant == 0:  # a round tub seat down to the floor
        return parts + [(CYLINDER, (0.0, 0.0, seat / 2), (s, s, seat / 2))]
    parts.append((BOX, (0.0, 0.0, seat - 0.03), (s, s, 0.03)))
    if variant == 1:  # office chair: a column on a round foot
        r, foot = rng.uniform(0.03, 0.05), rng.uniform(0.18, 0.26)
        return parts + [(CYLINDER, (0.0, 0.0, seat / 2), (r, r, seat / 2)),
                        (CYLINDER, (0.0, 0.0, 0.03), (foot, foot, 0.03))]
    w = rng.uniform(0.02, 0.04)  # two side panels
    return parts + [(BOX, (sx * (s - w), 0.0, (seat - 0.06) / 2), (w, s, (seat - 0.06) / 2)) for sx in (-1, 1)]


def _lamp(rng: np.random.Generator) -> list[_Part]:
    top, foot, pole = rng.uniform(1.1, 1.6), rng.uniform(0.12, 0.18), rng.uniform(0.015, 0.03)
    parts = [(CYLINDER, (0.0, 0.0, 0.02), (foot, foot, 0.02)), (CYLINDER, (0.0, 0.0, top / 2), (pole, pole, top / 2))]
    if rng.random() < 0.5:
        r, h = rng.uniform(0.15, 0.25), rng.uniform(0.1, 0.16)
        return parts + [(CYLINDER, (0.0, 0.0, top), (r, r, h))]
    r = rng.uniform(0.14, 0.22)
    return parts + [(SPHERE, (0.0, 0.0, top + r * 0.6), (r, r, r))]


def _plant(rng: np.random.Generator) -> list[_Part]:
    r, h, leaf = rng.uniform(0.12, 0.22), rng.uniform(0.1, 0.22), rng.uniform(0.2, 0.42)
    parts = [(CYLINDER, (0.0, 0.0, h), (r, r, h)), (SPHERE, (0.0, 0.0, 2 * h + 0.8 * leaf), (leaf, leaf, leaf))]
    if rng.random() < 0.5:
        small, turn = leaf * rng.uniform(0.5, 0.75), rng.uniform(0, 2 * np.pi)
        xy = (leaf * 0.7 * np.cos(turn), leaf * 0.7 * np.sin(turn))
        parts.append((SPHERE, (xy[0], xy[1], 2 * h + 1.5 * leaf), (small, small, small)))
    return parts


def _ball(rng: np.random.Generator) -> list[_Part]:
    r = rng.uniform(0.12, 0.35)
    return [(SPHERE, (0.0, 0.0, r), (r, r, r))]


_BUILDERS = {"bed": _bed, "sofa": _sofa, "table": _table, "cabinet": _cabinet, "chair": _chair, "lamp": _lamp,
             "plant": _plant, "ball": _ball}
assert tuple(_BUILDERS) == OBJECT_CLASSES

# room type -> (the class every room of the type holds, relative frequency of each class in OBJECT_CLASSES
# order for the others). Only the objects tell the room type: its surfaces look like any other room's.
_ROOM_SPEC = {
    "bedroom": (0, (4, 0, 0, 3, 0, 3, 1, 0)),
    "living_room": (1, (0, 4, 3, 0, 0, 1, 3, 0)),
    "kitchen": (3, (0, 0, 3, 6, 3, 0, 0, 0)),
    "office": (4, (0, 0, 3, 1, 6, 2, 0, 0)),
    "playroom": (7, (0, 0, 0, 0, 1, 0, 1, 8)),
}
assert tuple(_ROOM_SPEC) == ROOM_TYPES
_ALL_KINDS = (TEX_PLAIN, TEX_STRIPES, TEX_CHECKER, TEX_NOISE)


# Curved parts thinner than this are made square instead: curvature labels stay within 16 1/m, the range of the
# Taskonomy export's curvature encoding (scenes/taskonomy_format.py), and no 1-px leg or knob carries a
# curvature several times any other surface's.
MIN_CURVED_RADIUS = 1.0 / 16.0


def _square_thin(parts: list[_Part]) -> list[_Part]:
    """Cylinders and spheres of radius below MIN_CURVED_RADIUS become boxes of the same half sizes."""
    return [(BOX if shape != BOX and half[0] < MIN_CURVED_RADIUS else shape, o, half) for shape, o, half in parts]


def _place(parts: list[_Part], xy: np.ndarray, yaw: float) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """An object's parts in the world: offsets turned by yaw about the vertical and moved to xy."""
    c, s = np.cos(yaw), np.sin(yaw)
    return [(shape, np.array([xy[0] + c * o[0] - s * o[1], xy[1] + s * o[0] + c * o[1], o[2]]), np.array(half),
             yaw if shape == BOX else 0.0) for shape, o, half in parts]


def _footprint(parts: list[_Part]) -> tuple[np.ndarray, float]:
    """The object's footprint: a circle (centre in the object's frame, radius) holding every part's
    bounding circle, centred on the parts' bounding rectangle."""
    radii = [float(np.hypot(h[0], h[1])) if shape == BOX else h[0] for shape, _, h in parts]
    xy = np.array([o[:2] for _, o, _ in parts])
    r = np.array(radii)
    centre = ((xy - r[:, None]).min(axis=0) + (xy + r[:, None]).max(axis=0)) / 2
    return centre, float(np.max(np.hypot(*(xy - centre).T) + r))


def sample_scene(rng: np.random.Generator, max_objects: int = 10, n_lights: int = 3, min_objects: int = 3,
                 room_type: int | None = None, class_materials: bool = False, columns: float = 0.85) -> Scene:
    """A random box room holding min_objects..max_objects pieces of furniture (each 1..5 primitives), some
    rooms with columns, lit by 1..n_lights lights. `room_type` forces the type (the random stream is the same).

    `class_materials`: each object class has its own texture kind and hue (an easier world, where colour tells
    the class and so, through the furniture, the room type); default off: materials ignore the class.
    `columns`: the share of rooms with 1..5 columns.
    Draw order: room type, room size, the six faces' materials (before any object: the same for every
    room type), columns, objects, lights.
    """
    drawn = int(rng.integers(len(ROOM_TYPES)))
    room_type = drawn if room_type is None else int(room_type)
    anchor, freq = _ROOM_SPEC[ROOM_TYPES[room_type]]
    room = np.array([rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5), rng.uniform(2.4, 3.2)])

    floor = _material(rng, (0.0, 0.55), (0.25, 0.85), _ALL_KINDS)
    ceiling = _material(rng, (0.0, 0.1), (0.8, 0.95), (TEX_PLAIN,))
    wall = _material(rng, (0.0, 0.5), (0.5, 0.95), (TEX_PLAIN, TEX_STRIPES, TEX_NOISE))
    kinds, colors, scales = zip(*((floor, ceiling) + (wall,) * 4))
    kinds, colors, scales = list(kinds), list(colors), list(scales)
    # floor patterns a little coarser than object ones
    scales[0] *= 2.0

    prims, groups, classes, circles = [], [], [], []  # circles: (xy, radius) of placed footprints
    column = _material(rng, (0.0, 0.4), (0.5, 0.95), _ALL_KINDS)
    pillars = []  # columns: part of the room (class 1, background), placed after the room's first piece
    for _ in range(int(rng.integers(1, 6)) if rng.random() < columns else 0):
        r = rng.uniform(0.12, 0.3)
        if rng.random() < 0.5:  # a half-column in a wall: curved surface where a view meets a wall
            axis, side = int(rng.integers(2)), int(rng.integers(2))
            xy = rng.uniform(r, room[:2] - r)
            xy[axis] = side * room[axis] + (1 - 2 * side) * rng.uniform(0.0, 0.5 * r)
        else:
            xy = rng.uniform(r + 0.5, room[:2] - r - 0.5)
        pillars.append((xy, r))

    def add(shape_parts: list[tuple[int, np.ndarray, np.ndarray, float]], group: int, cls: int, material) -> None:
        for part in shape_parts:
            prims.append(part)
            groups.append(group)
            classes.append(cls)
            kinds.append(material[0])
            colors.append(material[1])
            scales.append(material[2])

    def add_pillars() -> None:
        for xy, r in pillars:
            if all(np.hypot(*(xy - c)) > r + cr + 0.1 for c, cr in circles):
                circles.append((xy, r))
                size = np.array([r, r, room[2] / 2 + 0.01])  # through the ceiling: no cap meets it
                add([(CYLINDER, np.array([xy[0], xy[1], room[2] / 2]), size, 0.0)], -1, 1, column)

    p = np.asarray(freq, np.float64) / np.sum(freq)
    n_objects = int(rng.integers(min_objects, max_objects + 1))
    for i in range(n_objects):
        if i == 1:
            add_pillars()
        k = anchor if i == 0 else int(rng.choice(len(OBJECT_CLASSES), p=p))
        parts = _square_thin(_BUILDERS[OBJECT_CLASSES[k]](rng))
        centre, reach = _footprint(parts)
        yaw = rng.uniform(0, 2 * np.pi)
        for _attempt in range(20 if 2 * reach + 0.1 < room[:2].min() else 0):
            # rejection sampling: footprints must not overlap nor leave the room
            xy = rng.uniform(reach + 0.05, room[:2] - reach - 0.05)
            if all(np.hypot(*(xy - c)) > reach + r + 0.05 for c, r in circles):
                break
        else:
            continue
        circles.append((xy, reach))
        c, s = np.cos(yaw), np.sin(yaw)
        origin = xy - np.array([c * centre[0] - s * centre[1], s * centre[0] + c * centre[1]])
        kind, albedos, scale = _class_material(rng, k) if class_materials else \
            _material(rng, (0.0, 0.8), (0.2, 0.95), _ALL_KINDS)
        add(_place(parts, origin, yaw), max(groups, default=-1) + 1, 2 + k, (kind, albedos, scale * 0.5))
    if n_objects < 2:
        add_pillars()

    n = int(rng.integers(1, n_lights + 1))
    light_pos = np.empty((n, 3))
    for li in range(n):  # near the ceiling, outside every column
        for _attempt in range(20):
            xy = rng.uniform(0.6, room[:2] - 0.6)
            if all(np.hypot(*(xy - pr[1][:2])) > pr[2][0] + 0.3 for pr, g in zip(prims, groups) if g < 0):
                break
        light_pos[li] = (xy[0], xy[1], room[2] - rng.uniform(0.1, 0.3))  # above the tallest furniture (2 m)
    share = rng.dirichlet(np.full(n, 2.0))
    shapes, centers, sizes, yaws = zip(*prims) if prims else ((), (), (), ())
    return Scene(
        room=room, room_type=room_type,
        obj_shape=np.array(shapes, np.int32), obj_center=np.array(centers, np.float64).reshape(-1, 3),
        obj_size=np.array(sizes, np.float64).reshape(-1, 3), obj_yaw=np.array(yaws, np.float64),
        obj_class=np.array(classes, np.int32),
        tex_kind=np.array(kinds, np.int32), tex_color=np.array(colors, np.float64),
        tex_scale=np.array(scales, np.float64),
        # total power 1.2..3.2 over the lights: a wall 2 m away gets ~0.3..0.8 (little clipping after albedo)
        light_pos=light_pos, light_power=rng.uniform(1.2, 3.2) * share,
        ambient=float(rng.uniform(0.06, 0.28)),
        obj_group=np.array(groups, np.int32),
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

    Most cameras turn towards a random piece of furniture (the mean of its parts' centres, with jitter), as
    a person photographing a room would;
    the rest look in a random direction, so that bare walls and corners are seen too.
    """
    groups = scene.obj_group if scene.obj_group is not None else np.arange(scene.n_objects)
    pieces = np.unique(groups[groups >= 0])
    if len(pieces) and rng.random() < 0.9:
        piece = groups == pieces[rng.integers(len(pieces))]
        target = scene.obj_center[piece].mean(axis=0)
        reach = np.max(np.hypot(*(scene.obj_center[piece, :2] - target[:2]).T) + scene.footprint[piece])
        # from a free spot ~0.3..1.6 m beyond the piece's footprint, so that it fills a good part of the view
        position = _free_position(scene, rng, np.array([target[0], target[1], 1.4]), (reach + 0.3, reach + 1.6))
        delta = target - position
        yaw = np.arctan2(delta[1], delta[0]) + rng.uniform(-0.35, 0.35)
        pitch = np.clip(np.arctan2(delta[2], np.hypot(delta[0], delta[1])) + rng.uniform(-0.1, 0.15), -0.6, 0.05)
    else:
        position = _free_position(scene, rng)
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
