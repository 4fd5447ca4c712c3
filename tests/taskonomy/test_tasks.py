from __future__ import annotations

import pytest
import torch

from taskonomy import TaskonomyError
from taskonomy import tasks
from taskonomy.losses import get_loss

DESIGN_TASKS = {
    "low-level": {"autoencoding", "denoising", "colorization", "inpainting", "jigsaw"},
    "2D": {"edge_texture", "keypoints2d", "segment_unsup2d"},
    "3D": {"depth_zbuffer", "depth_euclidean", "normal", "reshading", "curvature", "edge_occlusion", "keypoints3d",
           "segment_unsup25d", "room_layout", "vanishing_point"},
    "semantic": {"segment_semantic", "class_object", "class_scene"},
    "multi-view": {"egomotion", "fixated_pose", "nonfixated_pose", "point_matching"},
    "control": {"random", "pixels"},
}


def test_dictionary_has_every_design_task_in_its_group():
    by_group: dict[str, set[str]] = {}
    for task in tasks.all_tasks():
        by_group.setdefault(task.group, set()).add(task.name)
    assert by_group == DESIGN_TASKS


@pytest.mark.parametrize("alias,name", [("rgb2sfnorm", "normal"), ("rgb2depth", "depth_zbuffer"),
                                        ("rgb2mist", "depth_euclidean"), ("class_places", "class_scene"),
                                        ("impainting_whole", "inpainting"), ("segmentsemantic_rb", "segment_semantic")])
def test_original_names_are_aliases(alias, name):
    assert tasks.get(alias).name == name


@pytest.mark.parametrize("bad", ["a/b", "..", "../x", "has space", "normál", "Normal", "", "1abc", "x" * 65])
def test_names_that_cannot_be_store_paths_are_refused(bad):
    with pytest.raises(TaskonomyError, match="invalid task name"):
        tasks.validate_name(bad)


def test_registering_a_taken_name_or_alias_is_refused():
    with pytest.raises(TaskonomyError, match="already registered"):
        tasks.register(tasks.Task("normal", "3D", "rgb", "dense", 3, "l1", "again"))
    with pytest.raises(TaskonomyError, match="already registered"):
        tasks.register(tasks.Task("my_normal", "3D", "rgb", "dense", 3, "l1", "x", aliases=("rgb2sfnorm",)))


def test_source_only_and_controls():
    assert {t.name for t in tasks.all_tasks() if not t.is_target} == {"colorization", "inpainting", "jigsaw",
                                                                        "random", "pixels"}
    assert all(t.is_source for t in tasks.all_tasks())


@pytest.mark.parametrize("task", [t for t in tasks.all_tasks() if t.head != "none"], ids=lambda t: t.name)
def test_every_loss_returns_one_value_per_image(task):
    size, batch = 16, 3
    gen = torch.Generator().manual_seed(0)
    shape = task.label_shape(size)
    if task.loss == "ce_dense":
        pred = torch.randn(batch, task.num_classes, size, size, generator=gen)
        target = torch.randint(0, task.num_classes, (batch, *shape), generator=gen)
    elif task.loss == "ce":
        pred, target = torch.randn(batch, task.num_classes, generator=gen), torch.tensor([0, 1, 2])
    elif task.loss == "soft_ce":
        pred, target = torch.randn(batch, task.channels, generator=gen), torch.full((batch, task.channels),
                                                                                     1 / task.channels)
    else:
        pred, target = torch.randn(batch, *shape, generator=gen), torch.rand(batch, *shape, generator=gen)
    loss = get_loss(task.loss)(pred, target)
    assert loss.shape == (batch,)
    # per image: changing image 0's prediction changes only loss[0]
    pred2 = pred.clone()
    pred2[0].view(-1)[0] += 1.0  # one element: a constant shift would leave softmax losses unchanged
    loss2 = get_loss(task.loss)(pred2, target)
    assert torch.equal(loss[1:], loss2[1:]) and not torch.equal(loss[:1], loss2[:1])
