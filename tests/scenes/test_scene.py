"""The scene sampler: furniture of several primitives with exact labels, and room types told by the furniture,
never by a colour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from taskonomy.config import DataConfig
from taskonomy.runtime import cap_threads
from taskonomy.tasks import OBJECT_CLASSES, ROOM_TYPES

cap_threads(2)

from taskonomy.scenes._reference import render_reference  # noqa: E402
from taskonomy.scenes.render import render  # noqa: E402
from taskonomy.scenes.scene import (  # noqa: E402
    BOX, MIN_CURVED_RADIUS, N_ROOM_FACES, _ROOM_SPEC, sample_camera, sample_scene,
)

FOV = math.radians(65)


def _scenes(n: int, seed: int = 0, **kwargs):
    return [sample_scene(np.random.default_rng([seed, i, 0]), **kwargs) for i in range(n)]


def test_every_primitive_carries_its_furniture_class() -> None:
    built = set()
    for scene in _scenes(60):
        groups, classes = scene.obj_group, scene.obj_class
        assert len(groups) == scene.n_objects == len(scene.tex_kind) - N_ROOM_FACES
        np.testing.assert_array_equal(groups < 0, classes == 1)  # columns: room (background), not furniture
        # curvature labels within the Taskonomy export's +-16 1/m
        assert np.all(scene.obj_size[scene.obj_shape != BOX, 0] >= MIN_CURVED_RADIUS)
        pieces = np.unique(groups[groups >= 0])
        np.testing.assert_array_equal(pieces, np.arange(len(pieces)))
        assert 1 <= len(pieces) <= 10
        for g in pieces:
            part = groups == g
            assert len(set(classes[part])) == 1 and 1 <= part.sum() <= 5
            assert len({tuple(c.ravel()) for c in scene.tex_color[N_ROOM_FACES:][part]}) == 1  # one material
            built.add((int(classes[part][0]), int(part.sum())))
    assert {c for c, _ in built} == set(range(2, 2 + len(OBJECT_CLASSES)))
    assert any(n >= 4 for _, n in built)


def test_multi_primitive_scenes_render_exact_semantic_labels_as_the_reference() -> None:
    scenes = _scenes(8, seed=3)
    cameras = [sample_camera(s, np.random.default_rng([3, i, 1]), FOV) for i, s in enumerate(scenes)]
    fast, slow = render(scenes, cameras, 24), render_reference(scenes, cameras, 24)
    assert np.mean(fast.surface == slow.surface) >= 0.995 and np.mean(fast.semantic == slow.semantic) >= 0.995
    for b, scene in enumerate(scenes):
        k = fast.surface[b] - N_ROOM_FACES
        expected = np.where(k >= 0, scene.obj_class[np.maximum(k, 0)], 1)
        np.testing.assert_array_equal(fast.semantic[b], expected)
    # the views see furniture, and parts of it other than the first primitive of a piece
    assert np.mean(fast.semantic >= 2) > 0.05
    seen_later_parts = [np.isin(fast.surface[b] - N_ROOM_FACES, np.nonzero(
        (s.obj_group >= 0) & (np.diff(s.obj_group, prepend=-2) == 0))[0]).any() for b, s in enumerate(scenes)]
    assert sum(seen_later_parts) >= 2


def test_room_type_changes_no_surface_colour() -> None:
    # the same random stream for every room type: the room's faces and columns look the same
    for seed in range(10):
        rooms = [sample_scene(np.random.default_rng(seed), room_type=t) for t in range(len(ROOM_TYPES))]
        assert [r.room_type for r in rooms] == list(range(len(ROOM_TYPES)))
        faces, columns = set(), set()
        for room in rooms:
            np.testing.assert_array_equal(room.room, rooms[0].room)
            for looks, surfaces in ((faces, np.arange(N_ROOM_FACES)),
                                    (columns, N_ROOM_FACES + np.nonzero(room.obj_group < 0)[0][:1])):
                if len(surfaces):
                    looks.add((room.tex_kind[surfaces].tobytes(), room.tex_color[surfaces].tobytes(),
                               room.tex_scale[surfaces].tobytes()))
        assert len(faces) == 1 and len(columns) <= 1


def test_furniture_colour_does_not_tell_its_class_and_furniture_tells_the_room() -> None:
    colours, classes, anchored, per_type = [], [], [], np.zeros((len(ROOM_TYPES), len(OBJECT_CLASSES)))
    for scene in _scenes(300, seed=1):
        furniture = scene.obj_group >= 0
        colours.append(scene.tex_color[N_ROOM_FACES:][furniture, 0])
        classes.append(scene.obj_class[furniture] - 2)
        anchor = _ROOM_SPEC[ROOM_TYPES[scene.room_type]][0]
        anchored.append(anchor in scene.obj_class - 2)
        per_type[scene.room_type] += np.bincount(scene.obj_class[furniture] - 2, minlength=len(OBJECT_CLASSES))
    colours, classes = np.concatenate(colours), np.concatenate(classes)
    overall = colours.mean(axis=0)
    for k in range(len(OBJECT_CLASSES)):
        assert np.all(np.abs(colours[classes == k].mean(axis=0) - overall) < 0.08), OBJECT_CLASSES[k]
    assert np.mean(anchored) > 0.95
    # each room type's most frequent class is its own (bed, sofa, cabinet, chair, ball)
    assert len(set(np.argmax(per_type, axis=1))) == len(ROOM_TYPES)


def test_object_range_is_validated() -> None:
    assert DataConfig(min_objects=2, max_objects=2).min_objects == 2
    with pytest.raises(ValidationError, match="min_objects <= max_objects"):
        DataConfig(min_objects=5, max_objects=3)
    for scene in _scenes(20, min_objects=1, max_objects=2, n_lights=1):
        assert np.unique(scene.obj_group[scene.obj_group >= 0]).size <= 2 and len(scene.light_pos) == 1
