"""The Numba ray caster against its NumPy oracle, against closed-form cases, and for determinism."""

from __future__ import annotations

import numpy as np
import pytest

from taskonomy.runtime import cap_threads

cap_threads(2)

from taskonomy.scenes._reference import render_reference  # noqa: E402
from taskonomy.scenes.render import render  # noqa: E402
from taskonomy.scenes.scene import (  # noqa: E402
    BOX, CYLINDER, N_ROOM_FACES, SPHERE, TEX_CHECKER, TEX_NOISE, TEX_PLAIN, TEX_STRIPES, Buffers, Camera, Scene,
    look_at, pair_cameras, sample_camera, sample_scene,
)

FOV = np.radians(65)
FAST_FIELDS = ("rgb", "depth_z", "depth_euclid", "position")


def _random_views(seed: int, n: int) -> tuple[list[Scene], list[Camera]]:
    """n random views: each scene's own camera plus two of its multi-view second views."""
    rng = np.random.default_rng(seed)
    scenes, cameras = [], []
    while len(cameras) < n:
        scene = sample_scene(rng, max_objects=7)
        camera = sample_camera(scene, rng, FOV)
        points = render([scene], [camera], 16).position[0].astype(np.float64)
        others = list(pair_cameras(scene, camera, points, rng).values())[:2]
        scenes += [scene] * 3
        cameras += [camera] + others
    return scenes[:n], cameras[:n]


def _room(objects=(), lights=((2.0, 2.0, 2.75),), room=(4.0, 4.0, 3.0), ambient=0.2, texture=TEX_PLAIN) -> Scene:
    """A room of one texture kind with (shape, centre, half sizes, yaw, class) objects and unit-power lights."""
    k, m = len(objects), N_ROOM_FACES + len(objects)
    rng = np.random.default_rng(k + texture)
    return Scene(
        room=np.array(room, np.float64), room_type=0,
        obj_shape=np.array([o[0] for o in objects], np.int32),
        obj_center=np.array([o[1] for o in objects], np.float64).reshape(-1, 3),
        obj_size=np.array([o[2] for o in objects], np.float64).reshape(-1, 3),
        obj_yaw=np.array([o[3] for o in objects], np.float64),
        obj_class=np.array([o[4] for o in objects], np.int32),
        tex_kind=np.full(m, texture, np.int32),
        tex_color=np.full((m, 2, 3), 0.5) if texture == TEX_PLAIN else rng.uniform(0.1, 0.9, (m, 2, 3)),
        tex_scale=np.ones(m) if texture == TEX_PLAIN else rng.uniform(0.1, 0.4, m),
        light_pos=np.array(lights, np.float64).reshape(-1, 3), light_power=np.ones(len(lights)), ambient=ambient,
    )


def _camera(position, target, fov=FOV) -> Camera:
    position = np.array(position, np.float64)
    return Camera(position, look_at(position, np.array(target, np.float64)), fov)


def _assert_agree(fast: Buffers, slow: Buffers) -> None:
    """Same dtypes and shapes; values within 1e-4 but for a few pixels (silhouette ties)."""
    same_surface = fast.surface == slow.surface
    assert same_surface.mean() >= 0.995
    for field in Buffers._fields:
        a, b = getattr(fast, field), getattr(slow, field)
        assert a.dtype == b.dtype and a.shape == b.shape and a.flags.c_contiguous, field
        err = np.abs(a.astype(np.float64) - b.astype(np.float64))
        err = err.max(axis=-1) if err.ndim == 4 else err
        assert np.mean(err > 1e-4) <= 0.005, f"{field}: {np.mean(err > 1e-4):.4f} of pixels differ"


@pytest.mark.parametrize("seed, size", [(0, 16), (1, 24), (2, 32), (3, 17)])
def test_matches_numpy_reference(seed: int, size: int) -> None:
    scenes, cameras = _random_views(seed, 6)
    _assert_agree(render(scenes, cameras, size), render_reference(scenes, cameras, size))


_SHAPES = [(BOX, (1.2, 1.0, 0.4), (0.5, 0.3, 0.4), 0.6, 2), (SPHERE, (2.8, 1.2, 0.35), (0.35, 0.35, 0.35), 0.0, 8),
           (CYLINDER, (2.0, 3.0, 0.6), (0.3, 0.3, 0.6), 0.0, 7)]


@pytest.mark.parametrize("texture", [TEX_STRIPES, TEX_CHECKER, TEX_NOISE])
def test_textures_and_shapes_match_reference(texture: int) -> None:
    # every surface of one texture kind; views of each wall, and one from above onto the cylinder's cap
    scene = _room(_SHAPES, lights=((1.0, 1.0, 2.75), (3.0, 3.0, 2.75)), texture=texture)
    centre = (2.0, 2.0, 1.2)
    cameras = [_camera(centre, target) for target in [(4, 2, 1), (0, 2, 1), (2, 4, 1), (2, 0, 1.5), (2, 2, 0)]]
    cameras.append(_camera((2.6, 3.0, 2.2), (2.0, 3.0, 1.2)))
    _assert_agree(render([scene] * 6, cameras, 24), render_reference([scene] * 6, cameras, 24))


def test_cylinder_side_and_cap() -> None:
    out = render([_room(_SHAPES)], [_camera((2.6, 3.0, 2.2), (2.0, 3.0, 1.2))], 32)
    on = out.surface[0] == N_ROOM_FACES + 2
    cap = on & (out.normal[0, ..., 2] > 0.5)
    side = on & ~cap
    assert cap.sum() > 20 and side.sum() > 20
    np.testing.assert_allclose(out.position[0][cap][:, 2], 1.2, atol=1e-5)
    np.testing.assert_allclose(out.curvature[0][cap], 0.0)
    np.testing.assert_allclose(out.curvature[0][side], np.broadcast_to([1 / 0.3, 0.0], (side.sum(), 2)), rtol=1e-6)
    np.testing.assert_allclose(np.hypot(*(out.position[0][side][:, :2] - [2.0, 3.0]).T), 0.3, atol=1e-5)


def test_wall_depth_and_normal() -> None:
    # looking along +x at the wall x = W from 3 m away, every pixel sees that wall
    size, fov = 16, np.radians(40)
    camera = _camera((1.0, 2.0, 1.5), (2.0, 2.0, 1.5), fov)
    out = render([_room()], [camera], size)
    assert np.all(out.surface == 3) and np.all(out.semantic == 1)
    f = camera.focal(size)
    c = (np.arange(size) + 0.5 - size / 2) / f
    ray_len = np.sqrt(c[None, :] ** 2 + c[:, None] ** 2 + 1)  # [v, u]: camera-frame length of the pixel's ray
    np.testing.assert_allclose(out.depth_z[0], 3.0, atol=1e-5)
    np.testing.assert_allclose(out.depth_euclid[0], 3.0 * ray_len, atol=1e-5)
    np.testing.assert_allclose(out.normal[0], np.broadcast_to([-1.0, 0.0, 0.0], (size, size, 3)), atol=1e-6)
    np.testing.assert_allclose(out.position[0, ..., 0], 4.0, atol=1e-6)
    # image right is world -y when looking along +x with z up; image down is world -z
    assert out.position[0, 0, 0, 1] > out.position[0, 0, -1, 1] and out.position[0, 0, 0, 2] > out.position[0, -1, 0, 2]
    np.testing.assert_allclose(out.albedo[0], 0.5, atol=1e-7)


def test_sphere_curvature_normal_and_depth() -> None:
    r = 0.4
    scene = _room([(SPHERE, (3.0, 2.0, r), (r, r, r), 0.0, 7)])
    camera = _camera((1.0, 2.0, r), (3.0, 2.0, r), np.radians(30))
    out = render([scene], [camera], 32)
    on_sphere = out.surface[0] == N_ROOM_FACES
    assert on_sphere.sum() > 50 and np.all(out.semantic[0][on_sphere] == 7)
    np.testing.assert_allclose(out.curvature[0][on_sphere], 1 / r, rtol=1e-6)
    assert np.all(out.curvature[0][~on_sphere] == 0)
    radial = (out.position[0][on_sphere] - np.array([3.0, 2.0, r])) / r
    np.testing.assert_allclose(out.normal[0][on_sphere], radial, atol=1e-5)
    assert out.depth_euclid[0][on_sphere].min() == pytest.approx(2.0 - r, abs=2e-3)


def test_object_casts_a_shadow() -> None:
    # one light right above a 1 m cube: the floor ring 0.5 < |x - 3| < 0.78 around it is in its shadow
    lights = ((3.0, 3.0, 2.75),)
    empty = _room(lights=lights, room=(6.0, 6.0, 3.0))
    boxed = _room([(BOX, (3.0, 3.0, 0.5), (0.5, 0.5, 0.5), 0.3, 4)], lights=lights, room=(6.0, 6.0, 3.0))
    camera = _camera((5.5, 3.0, 2.0), (3.65, 3.0, 0.0))
    out = render([empty, boxed], [camera, camera], 32)
    bare, shadowed = out.shading
    centre = (16, 16)  # the pixel at the image centre sees the floor near (3.65, 3, 0)
    assert out.surface[1][centre] == 0 and abs(out.position[1][centre][0] - 3.65) < 0.1
    assert shadowed[centre] == pytest.approx(0.2, abs=1e-6)  # the ambient alone
    assert bare[centre] > 0.2 + 0.1
    floor = (out.surface[0] == 0) & (out.surface[1] == 0)
    assert np.all(shadowed[floor] <= bare[floor] + 1e-6)  # an object never adds light to the floor


def test_shading_formula_without_objects() -> None:
    # ambient + sum power * max(0, n.l) / max(d^2, 0.25), incl. the clamp on the ceiling right above a light
    lights = ((2.0, 2.0, 2.75), (0.8, 3.0, 2.75))
    scene = _room(lights=lights)
    cameras = [_camera((2.0, 2.0, 1.5), (2.0, 2.01, 3.0)), _camera((3.0, 1.0, 1.2), (0.0, 4.0, 1.5))]
    out = render([scene] * 2, cameras, 24)
    p, n = out.position.astype(np.float64), out.normal.astype(np.float64)
    expected = np.full(p.shape[:3], 0.2)
    for light in lights:
        to_light = np.asarray(light) - p
        d2 = np.sum(to_light ** 2, -1)
        cos = np.sum(n * to_light, -1) / np.sqrt(d2)
        expected += np.maximum(cos, 0) / np.maximum(d2, 0.25)
    np.testing.assert_allclose(out.shading, expected, rtol=1e-4)
    assert out.shading[0].max() > 4.0  # the clamp: 0.2 + 1 / 0.25 right above the light
    np.testing.assert_allclose(out.rgb, np.clip((out.albedo * out.shading[..., None]) ** (1 / 2.2), 0, 1), atol=1e-5)


def test_full_false_matches_and_is_deterministic() -> None:
    scenes, cameras = _random_views(4, 5)
    full = render(scenes, cameras, 24)
    again = render(scenes, cameras, 24)
    fast = render(scenes, cameras, 24, full=False)
    for field in Buffers._fields:
        assert getattr(full, field).tobytes() == getattr(again, field).tobytes(), field
        if field in FAST_FIELDS:
            assert getattr(fast, field).tobytes() == getattr(full, field).tobytes(), field
        else:
            assert not getattr(fast, field).any() and getattr(fast, field).shape == getattr(full, field).shape


def test_every_hit_is_inside_the_room() -> None:
    scenes, cameras = _random_views(5, 6)
    out = render(scenes, cameras, 16)
    rooms = np.array([s.room for s in scenes])[:, None, None, :]
    assert np.all(out.position >= -1e-5) and np.all(out.position <= rooms + 1e-5)
    assert np.all(out.depth_z > 0) and np.all(out.depth_euclid >= out.depth_z - 1e-5)
    assert np.all((out.rgb >= 0) & (out.rgb <= 1))
    np.testing.assert_allclose(np.linalg.norm(out.normal, axis=-1), 1.0, atol=1e-5)


def test_edge_cases() -> None:
    scene = _room()
    out = render([scene], [_camera((1.0, 1.0, 1.0), (3.0, 3.0, 1.0))], 8)
    assert np.all(out.semantic == 1) and np.all(out.surface < N_ROOM_FACES)
    assert render([], [], 8).rgb.shape == (0, 8, 8, 3)
    with pytest.raises(ValueError, match="one camera per scene"):
        render([scene, scene], [_camera((1.0, 1.0, 1.0), (3.0, 3.0, 1.0))], 8)
