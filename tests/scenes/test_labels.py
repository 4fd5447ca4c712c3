"""Labels and inputs on real renders: shapes of every task, analytic scenes, canonical room frames, poses,
determinism per image, and each Numba kernel against its NumPy reference."""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.transform import Rotation

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.runtime import cap_threads
from taskonomy.scenes import _kmeans, _label_kernels as kern
from taskonomy.scenes.labels import (JIGSAW_PERMUTATIONS, NORMAL_QUANTILES, OCCLUSION_DILATE, RESHADING_POWER,
                                     make_inputs, make_labels, permute_tiles, unpermute_tiles)
from taskonomy.scenes.render import render
from taskonomy.scenes.scene import BOX, SPHERE, TEX_STRIPES, Buffers, Camera, Scene, look_at, pair_cameras, \
    sample_camera, sample_scene

cap_threads(2)

SIZE = 32
FOV = math.radians(65)
PAIRS = ("egomotion", "fixated_pose", "nonfixated_pose", "point_matching")
LABELLED = [t.name for t in registry.all_tasks() if t.head != "none"]


def _render_batch(scenes, cameras, seconds: dict[str, list[Camera]] | None = None):
    buffers = render(scenes, cameras, SIZE)
    views = {name: (cams, render(scenes, cams, SIZE, full=False)) for name, cams in (seconds or {}).items()}
    return buffers, views


@pytest.fixture(scope="module")
def sampled():
    """Six views of three random rooms with the second views of every multi-view task, and all labels."""
    scenes, cameras, seconds = [], [], {name: [] for name in PAIRS}
    for i in range(6):
        rng = np.random.default_rng([5, i])
        scene = scenes[-1] if i % 2 else sample_scene(np.random.default_rng([5, i, 0]))
        camera = sample_camera(scene, rng, FOV)
        points = render([scene], [camera], SIZE).position[0]
        for name, cam in pair_cameras(scene, camera, points, rng).items():
            seconds[name].append(cam)
        scenes.append(scene)
        cameras.append(camera)
    buffers, views = _render_batch(scenes, cameras, seconds)
    inputs, jigsaw = make_inputs(buffers.rgb, np.arange(100, 106), seed=3)
    labels = make_labels(LABELLED, scenes, cameras, buffers, views, jigsaw)
    return scenes, cameras, buffers, views, inputs, jigsaw, labels


def _room(room=(4.0, 6.0, 3.0), spheres=(), boxes=()) -> Scene:
    """A box room with striped walls and optional spheres (centre, radius), then boxes (centre, half-extents)
    with yaw 0."""
    k, faces = len(spheres) + len(boxes), 6 + len(spheres) + len(boxes)
    return Scene(
        room=np.array(room, np.float64), room_type=2,
        obj_shape=np.array([SPHERE] * len(spheres) + [BOX] * len(boxes), np.int32),
        obj_center=np.array([c for c, _ in (*spheres, *boxes)], np.float64).reshape(k, 3),
        obj_size=np.array([[r] * 3 for _, r in spheres] + [h for _, h in boxes], np.float64).reshape(k, 3),
        obj_yaw=np.zeros(k),
        obj_class=np.full(k, 2 + registry.OBJECT_CLASSES.index("ball"), np.int32),
        tex_kind=np.full(faces, TEX_STRIPES, np.int32),
        tex_color=np.tile([[0.7, 0.6, 0.5], [0.4, 0.5, 0.6]], (faces, 1, 1)), tex_scale=np.full(faces, 0.3),
        light_pos=np.array([[2.0, 3.0, 2.7]]), light_power=np.array([4.0]), ambient=0.2,
    )


def _camera(position, target) -> Camera:
    position = np.array(position, np.float64)
    return Camera(position, look_at(position, np.array(target, np.float64)), FOV)


def _labels(scenes, cameras, tasks, seconds=None):
    buffers, views = _render_batch(scenes, cameras, seconds)
    return make_labels(tasks, scenes, cameras, buffers, views, np.zeros(len(cameras), np.uint8)), buffers


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32)


def _boundary(inside: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour on the other side of the mask (S, S)."""
    padded = np.pad(inside, 1, mode="edge")
    out = np.zeros_like(inside)
    for dv, du in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out |= padded[dv:dv + SIZE, du:du + SIZE] != inside
    return out


def _near(mask: np.ndarray, radius: int = OCCLUSION_DILATE) -> np.ndarray:
    """Pixels within `radius` (Chebyshev) of a True pixel of mask (S, S)."""
    padded = np.pad(mask, radius)
    return np.any([padded[radius + dv:radius + dv + SIZE, radius + du:radius + du + SIZE]
                   for dv in range(-radius, radius + 1) for du in range(-radius, radius + 1)], axis=0)


# ---- every task -------------------------------------------------------------------------------------------

def test_every_labelled_task_has_its_registered_shape_and_dtype(sampled):
    labels = sampled[-1]
    assert set(labels) == set(LABELLED)
    for name in LABELLED:
        task = registry.get(name)
        assert labels[name].shape == (6, *task.label_shape(SIZE)), name
        assert labels[name].dtype == np.dtype(task.store_dtype), name
        assert np.isfinite(_f32(labels[name])).all(), name


def test_label_ranges_and_identities_on_sampled_views(sampled):
    scenes, _, buffers, _, inputs, jigsaw, labels = sampled
    np.testing.assert_allclose(_f32(labels["autoencoding"]), inputs["rgb"] / 255.0, atol=1e-3)
    assert np.array_equal(labels["denoising"], labels["autoencoding"])
    for name in ("reshading", "edge_occlusion", "keypoints2d", "keypoints3d"):
        assert 0.0 <= _f32(labels[name]).min() and _f32(labels[name]).max() <= 1.0, name
    assert labels["edge_occlusion"].max() == 1.0 and labels["keypoints3d"].max() > 0.3
    np.testing.assert_allclose(labels["class_object"].sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(labels["class_scene"], [s.room_type for s in scenes])
    assert np.array_equal(labels["segment_semantic"], buffers.semantic)
    assert np.array_equal(labels["jigsaw"], jigsaw)
    assert set(np.unique(labels["point_matching"])) <= {0.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(_f32(labels["normal"]), axis=1), 1.0, atol=2e-3)
    assert len(np.unique(labels["segment_unsup2d"][0].reshape(3, -1), axis=1)) <= 6


def test_labels_of_an_image_do_not_depend_on_its_batch_or_the_threads(sampled):
    scenes, cameras, buffers, views, _, jigsaw, labels = sampled
    part = slice(2, 5)
    sub_views = {n: (cams[part], Buffers(*(a[part] for a in bufs))) for n, (cams, bufs) in views.items()}
    again = make_labels(LABELLED, scenes[part], cameras[part], Buffers(*(a[part] for a in buffers)), sub_views,
                        jigsaw[part])
    for name in LABELLED:
        assert again[name].tobytes() == labels[name][part].tobytes(), name
    numba.set_num_threads(1)  # and not on the number of threads
    try:
        alone = make_labels(LABELLED, scenes, cameras, buffers, views, jigsaw)
    finally:
        cap_threads(2)
    for name in LABELLED:
        assert alone[name].tobytes() == labels[name].tobytes(), name


def test_bad_requests_are_refused_with_the_task_named(sampled):
    scenes, cameras, buffers, views, _, jigsaw, _ = sampled
    for tasks, views_given, match in ((["random"], views, "random"), (["nope"], views, "nope"),
                                      (["egomotion"], {}, "egomotion")):
        with pytest.raises(TaskonomyError, match=match):
            make_labels(tasks, scenes, cameras, buffers, views_given, jigsaw)


# ---- analytic scenes --------------------------------------------------------------------------------------

def test_a_camera_facing_a_wall_sees_one_plane():
    scene, camera = _room(), _camera((2.5, 3.0, 1.5), (4.0, 3.0, 1.5))  # 1.5 m from the wall x = W
    tasks = ["normal", "depth_zbuffer", "edge_occlusion", "curvature", "keypoints3d", "segment_unsup25d",
             "reshading", "class_object", "room_layout", "vanishing_point"]
    labels, _ = _labels([scene], [camera], tasks)
    normal = _f32(labels["normal"][0]).reshape(3, -1)
    np.testing.assert_allclose(normal, np.tile([[0.0], [0.0], [-1.0]], normal.shape[1]), atol=1e-3)
    np.testing.assert_allclose(_f32(labels["depth_zbuffer"]), 1.5, atol=2e-3)
    assert not labels["edge_occlusion"].any() and not labels["curvature"].any()
    assert _f32(labels["keypoints3d"]).max() < 1e-3
    np.testing.assert_allclose(_f32(labels["segment_unsup25d"][0, :3]).reshape(3, -1), normal, atol=2e-3)
    np.testing.assert_allclose(_f32(labels["segment_unsup25d"][0, 3]), 1.5, atol=2e-3)
    t = (np.arange(SIZE) + 0.5 - SIZE / 2) / camera.focal(SIZE)
    ray2 = t[None, :] ** 2 + t[:, None] ** 2 + 1  # cos = 1/|ray|, distance = 1.5 |ray|
    np.testing.assert_allclose(_f32(labels["reshading"][0, 0]), np.minimum(1, RESHADING_POWER / 2.25 / ray2 ** 1.5),
                               atol=1e-3)
    np.testing.assert_allclose(labels["class_object"], 1 / registry.N_OBJECT_CLASSES)  # no object in view
    # camera axes = room axes: V = I, centre 0.5 m behind the camera, half-extents along (right, down, forward)
    np.testing.assert_allclose(labels["room_layout"][0], [0, 0, 0, 0, 0, -0.5, 3.0, 1.5, 2.0], atol=1e-6)
    np.testing.assert_allclose(labels["vanishing_point"][0], np.eye(3).ravel(), atol=1e-6)


def test_a_room_corner_is_a_3d_keypoint_and_no_occlusion_edge():
    camera = _camera((1.5, 2.0, 1.4), (4.0, 6.0, 0.0))  # looking straight at the floor corner (W, D, 0)
    labels, _ = _labels([_room()], [camera], ["edge_occlusion", "keypoints3d", "normal"])
    assert not labels["edge_occlusion"].any()  # walls and floor meet in creases, they occlude nothing
    assert len(np.unique(np.round(_f32(labels["normal"][0]).reshape(3, -1), 2), axis=1)) >= 3
    v, u = np.unravel_index(np.argmax(_f32(labels["keypoints3d"][0, 0])), (SIZE, SIZE))
    assert max(abs(v - SIZE / 2 + 0.5), abs(u - SIZE / 2 + 0.5)) <= 2
    assert labels["keypoints3d"].max() > 0.5


def test_a_sphere_has_curvature_one_over_its_radius_and_an_occluding_contour():
    scene = _room(spheres=[((2.0, 3.0, 0.5), 0.5)])
    labels, buffers = _labels([scene], [_camera((2.0, 1.2, 0.9), (2.0, 3.0, 0.5))], ["curvature", "edge_occlusion"])
    on_sphere = buffers.surface[0] == 6
    assert on_sphere[SIZE // 2, SIZE // 2]
    np.testing.assert_allclose(_f32(labels["curvature"][0])[:, on_sphere], 2.0)
    assert not labels["curvature"][0][:, ~on_sphere].any()
    edge = _f32(labels["edge_occlusion"][0, 0])
    boundary = _boundary(on_sphere)
    # edges only where a neighbour is on the other surface, widened by the dilation
    assert not edge[~_near(boundary)].any()
    upper = boundary & (np.arange(SIZE)[:, None] < SIZE // 2)
    assert (edge[_near(upper)] == 1).mean() > 0.9  # the sphere's upper silhouette occludes the wall behind it


def test_a_box_in_front_of_a_wall_has_an_occlusion_band_exactly_around_its_silhouette():
    # camera at the box's centre height and width: only its front face (2.7 m away, the wall 5 m) is seen
    scene = _room(boxes=[((2.0, 4.0, 1.5), (0.5, 0.3, 0.5))])
    labels, buffers = _labels([scene], [_camera((2.0, 1.0, 1.5), (2.0, 6.0, 1.5))], ["edge_occlusion"])
    on_box = buffers.surface[0] == 6
    assert 40 < on_box.sum() < 200 and not on_box[[0, -1]].any() and not on_box[:, [0, -1]].any()
    edge = _f32(labels["edge_occlusion"][0, 0])
    assert set(np.unique(edge)) == {0.0, 1.0}  # a depth step of 2.3 m scores 1 on both sides
    assert np.array_equal(edge == 1, _near(_boundary(on_box)))  # the 2-px silhouette, 1 px wider each way


# ---- rooms and poses --------------------------------------------------------------------------------------

def _turned(scene: Scene, camera: Camera) -> tuple[Scene, Camera]:
    """The same room and view in a world frame turned by 90 degrees about z: p' = R_z p + (D, 0, 0)."""
    turn = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    w, d, h = scene.room
    shift = np.array([d, 0.0, 0.0])
    turned = _room(room=(d, w, h))
    return turned, Camera(turn @ camera.position + shift, turn @ camera.rotation, camera.fov)


def test_room_layout_is_invariant_to_turning_the_room_frame(sampled):
    scene = _room(room=(4.0, 6.0, 3.0))
    cameras = sampled[1]
    cameras = [Camera(np.clip(c.position, 0.5, 2.5), c.rotation, c.fov) for c in cameras]  # inside this room
    tasks = ["room_layout", "vanishing_point"]
    before, _ = _labels([scene] * len(cameras), cameras, tasks)
    pairs = [_turned(scene, c) for c in cameras]
    after, _ = _labels([p[0] for p in pairs], [p[1] for p in pairs], tasks)
    for name in tasks:
        np.testing.assert_allclose(after[name], before[name], atol=1e-5)


def test_room_frame_is_near_the_camera_frame_and_signs_are_canonical(sampled):
    layout, vp = sampled[-1]["room_layout"], sampled[-1]["vanishing_point"]
    v = vp.reshape(-1, 3, 3).transpose(0, 2, 1)  # columns: right, down, forward
    np.testing.assert_allclose(Rotation.from_rotvec(layout[:, :3]).as_matrix(), v, atol=1e-5)
    assert (np.linalg.norm(layout[:, :3], axis=1) < np.pi / 2).all()
    assert (v[:, 0, 0] > 0).all() and (v[:, 2, 2] > 0).all() and (v[:, 1, 1] > 0).all()


def test_relative_pose_of_the_same_camera_is_zero_and_of_a_turn_its_axis_angle():
    camera = _camera((1.0, 1.5, 1.3), (3.0, 4.0, 1.0))
    theta, step = 0.2, np.array([0.1, -0.05, 0.3])
    turn = Rotation.from_rotvec([0.0, theta, 0.0]).as_matrix()  # about the camera's own y (down) axis
    moved = Camera(camera.position + camera.rotation @ step, camera.rotation @ turn, FOV)
    seconds = {name: [camera, moved] for name in PAIRS[:3]}
    labels, _ = _labels([_room()] * 2, [camera, camera], list(PAIRS[:3]), seconds)
    for name in PAIRS[:3]:
        np.testing.assert_allclose(labels[name][0], 0.0, atol=1e-6)
        np.testing.assert_allclose(labels[name][1], [0, theta, 0, *step], atol=1e-6)


def test_point_matching_is_one_for_cameras_fixating_the_same_visible_point():
    scene = _room(spheres=[((2.0, 3.0, 0.5), 0.5)])
    camera = _camera((1.0, 1.0, 1.4), (3.0, 5.0, 0.8))
    point = render([scene], [camera], SIZE).position[0, SIZE // 2, SIZE // 2].astype(np.float64)
    others = [_camera((2.5, 1.0, 1.0), point), _camera((0.6, 2.2, 1.7), point),
              _camera((2.5, 1.0, 1.0), point + [0.0, 0.0, 1.0])]  # the last looks 1 m above the point
    seconds = {"point_matching": others}
    labels, _ = _labels([scene] * 3, [camera] * 3, ["point_matching"], seconds)
    assert labels["point_matching"][:, 0].tolist() == [1.0, 1.0, 0.0]


# ---- inputs -----------------------------------------------------------------------------------------------

def test_inputs_of_an_image_are_the_same_in_any_batch(sampled):
    rgb = sampled[2].rgb
    indices = np.arange(40, 46)
    batch, jig = make_inputs(rgb, indices, seed=9)
    for i in (0, 3):
        alone, jig1 = make_inputs(rgb[i:i + 1], indices[i:i + 1], seed=9)
        assert jig1[0] == jig[i]
        for name, values in alone.items():
            assert values.tobytes() == batch[name][i:i + 1].tobytes(), name
    other, _ = make_inputs(rgb, indices, seed=10)
    assert not np.array_equal(other["noisy"], batch["noisy"])
    assert {k: v.shape for k, v in batch.items()} == {"rgb": (6, 3, SIZE, SIZE), "gray": (6, 1, SIZE, SIZE),
                                                       "noisy": (6, 3, SIZE, SIZE), "masked": (6, 3, SIZE, SIZE),
                                                       "permuted": (6, 3, SIZE, SIZE)}
    assert all(v.dtype == np.uint8 for v in batch.values())
    masked = (batch["masked"] != batch["rgb"]).any(axis=1).sum(axis=(1, 2))
    assert (masked <= (SIZE // 2) ** 2).all() and (masked > 0).any()


def test_noisy_input_has_gaussian_noise_of_sigma_one_tenth():
    rgb = np.full((16, 32, 32, 3), 0.5, np.float32)
    inputs, _ = make_inputs(rgb, np.arange(16), seed=1)
    noise = (inputs["noisy"].astype(np.float64) - inputs["rgb"]) / 255
    assert abs(noise.mean()) < 2e-3 and abs(noise.std() - 0.1) < 2e-3
    assert abs(((noise / noise.std()) ** 4).mean() - 3.0) < 0.1  # the kurtosis of a normal distribution


def test_jigsaw_inputs_unpermute_to_the_image(sampled):
    inputs, jigsaw = sampled[4], sampled[5]
    hwc = inputs["permuted"].transpose(0, 2, 3, 1)
    assert np.array_equal(unpermute_tiles(hwc, jigsaw), inputs["rgb"].transpose(0, 2, 3, 1))
    assert not np.array_equal(inputs["permuted"], inputs["rgb"])
    assert np.array_equal(inputs["permuted"][:, :, SIZE - SIZE % 3:], inputs["rgb"][:, :, SIZE - SIZE % 3:])


@given(hnp.arrays(np.uint8, (2, 11, 11, 1)), st.lists(st.integers(0, registry.N_JIGSAW - 1), min_size=2, max_size=2))
def test_unpermute_inverts_permute(images, index):
    index = np.array(index)
    assert np.array_equal(unpermute_tiles(permute_tiles(images, index), index), images)


def test_jigsaw_permutations_are_the_documented_maximin_table():
    perms = np.array(list(itertools.permutations(range(9))), np.int8)
    perms = perms[np.random.default_rng(2018).permutation(len(perms))]
    nearest = (perms != np.arange(9)).sum(1)
    chosen = []
    for _ in range(registry.N_JIGSAW):
        chosen.append(perms[int(np.argmax(nearest))])
        nearest = np.minimum(nearest, (perms != chosen[-1]).sum(1))
    assert np.array_equal(np.array(chosen), JIGSAW_PERMUTATIONS)
    distance = (JIGSAW_PERMUTATIONS[:, None] != JIGSAW_PERMUTATIONS[None]).sum(2)
    assert distance[np.triu_indices(registry.N_JIGSAW, 1)].min() >= 7


# ---- kernels against their NumPy references ---------------------------------------------------------------

def _pixels(sampled) -> tuple[np.ndarray, tuple]:
    _, cameras, buffers, *_ = sampled
    rotation = np.stack([c.rotation for c in cameras])
    slopes = np.stack([((np.arange(SIZE) + 0.5 - SIZE / 2) / c.focal(SIZE)).astype(np.float32) for c in cameras])
    args = (buffers.rgb, buffers.normal, buffers.depth_z, buffers.depth_euclid, rotation, slopes, slopes, 2.0)
    return kern.pixels(*args), args


def test_pixel_kernel_matches_numpy(sampled):
    fast, args = _pixels(sampled)
    np.testing.assert_allclose(fast, kern.pixels_reference(*args), atol=2e-6)


def test_structure_and_occlusion_kernels_match_numpy(sampled):
    pix, args = _pixels(sampled)
    ws, ww = kern.gaussian_weights(1.0), kern.gaussian_weights(1.5)
    x = pix[kern.NORMAL:kern.NORMAL + 4]
    for fast, ref in zip(kern.structure(x, ws, ww, 0.05), kern.structure_reference(x, ws, ww, 0.05)):
        np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    buffers = sampled[2]
    occ = (buffers.depth_z, pix[kern.NORMAL:kern.NORMAL + 3], buffers.surface, args[5], args[6], 6, 0.03, 0.12)
    for radius in (0, OCCLUSION_DILATE, 2):
        np.testing.assert_allclose(kern.occlusion(*occ, radius), kern.occlusion_reference(*occ, radius), atol=1e-4)
    thin, wide = kern.occlusion(*occ, 0), kern.occlusion(*occ, OCCLUSION_DILATE)
    assert (wide >= thin).all() and (wide > 0).mean() > 1.5 * (thin > 0).mean()


def test_kmeans_and_segment_means_kernels_match_numpy(sampled):
    pix, _ = _pixels(sampled)
    x = np.ascontiguousarray(pix[kern.NORMAL:kern.RGB + 3]).reshape(7, 6, -1)
    fit = np.ascontiguousarray(pix[kern.NORMAL:kern.RGB + 3, :, ::2, ::2]).reshape(7, 6, -1)
    w = np.array([1, 1, 1, 1, 0.05, 0.05, 0.05], np.float32)
    labels = _kmeans.kmeans(fit, x, w, 6, 10)
    assert (labels == _kmeans.kmeans_reference(fit, x, w, 6, 10)).mean() > 0.99
    means = _kmeans.segment_means(labels, x, 6)
    np.testing.assert_allclose(means, _kmeans.segment_means_reference(labels, x, 6), atol=1e-5)
    painted = _kmeans.paint(labels, means)
    assert np.array_equal(painted, means[np.arange(6)[:, None], labels].transpose(2, 0, 1))


@given(hnp.arrays(np.float32, (2, 3, 7), elements=st.floats(width=32, allow_nan=False)))
def test_float16_cast_is_bit_exact(values):
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16).transpose(1, 0, 2)
    fast, again = kern.to_float16(values, values[:1])
    assert fast.view(np.uint16).tobytes() == expected.view(np.uint16).tobytes()
    assert again.view(np.uint16).tobytes() == expected[:, :1].view(np.uint16).tobytes()


def test_input_kernel_matches_numpy(sampled):
    rgb = sampled[2].rgb
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 65536, rgb.shape, dtype=np.uint16)
    boxes = np.stack([rng.integers(0, 16, 6), rng.integers(0, 16, 6), rng.integers(8, 17, 6)], axis=1)
    args = (rgb, noise, NORMAL_QUANTILES, 0.1, boxes, 128, JIGSAW_PERMUTATIONS[rng.integers(0, registry.N_JIGSAW, 6)])
    for fast, ref in zip(kern.inputs(*args), kern.inputs_reference(*args)):
        assert fast.tobytes() == ref.tobytes()
