"""Stage I: task-specific networks (extract/networks.py) and their training (extract/stage1.py)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import TrainConfig
from taskonomy.extract.networks import Encoder, build_network, encode_images, prepare_images
from taskonomy.extract.stage1 import (LabelScaler, baseline_losses, fit_scaler, quality_row, train_task,
                                      validation_mask)
from taskonomy.losses import get_loss
from taskonomy.runtime import cap_threads
from taskonomy.scenes.dataset import open_data

cap_threads(2)

TRAINABLE = [t.name for t in registry.all_tasks() if t.head in ("dense", "global", "pair")]
SMALL = TrainConfig(width=4, feature_channels=8, epochs=1, batch=16)


def _random_labels(task: registry.Task, b: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """A batch of valid labels of `task`, in the shape and kind data.zarr stores them."""
    shape = (b, *task.label_shape(size))
    if task.loss in ("ce", "ce_dense"):
        return torch.randint(0, task.num_classes, shape, generator=gen).to(torch.uint8)
    if task.loss == "soft_ce":
        return torch.softmax(torch.randn(shape, generator=gen), dim=1)
    if task.loss == "bce":
        return torch.randint(0, 2, shape, generator=gen).float()
    return torch.randn(shape, generator=gen)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", TRAINABLE)
def test_network_output_gives_one_loss_per_image(name, size):
    task = registry.get(name)
    gen = torch.Generator().manual_seed(0)
    network = build_network(task, SMALL, size)
    channels = 1 if task.modality == "gray" else 3
    x = prepare_images(torch.randint(0, 256, (2, channels, size, size), generator=gen, dtype=torch.uint8))
    out = network(x, x.flip(0)) if task.head == "pair" else network(x)
    loss = get_loss(task.loss)(out, _random_labels(task, 2, size, gen))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.sum().backward()  # every parameter is on the path from input to loss
    assert all(p.grad is not None for p in network.parameters())


def test_pair_network_refuses_one_view():
    network = build_network(registry.get("egomotion"), SMALL, 32)
    with pytest.raises(TaskonomyError, match="pair task"):
        network(torch.zeros(1, 3, 32, 32))


def test_build_network_refuses_controls_and_odd_sizes():
    with pytest.raises(TaskonomyError, match="only dense, global and pair"):
        build_network(registry.get("random"), SMALL, 32)
    with pytest.raises(TaskonomyError, match="multiple of 8"):
        build_network(registry.get("normal"), SMALL, 36)


@pytest.mark.parametrize("size", [32, 64])
def test_encoder_is_the_same_architecture_for_every_task(size):
    cfg = TrainConfig()
    shapes = {name: {k: tuple(v.shape) for k, v in build_network(registry.get(name), cfg, size).encoder
                     .state_dict().items()} for name in TRAINABLE}
    reference = shapes[TRAINABLE[0]]
    assert all(s == reference for s in shapes.values())
    assert reference == {k: tuple(v.shape) for k, v in Encoder(cfg.width, cfg.blocks, cfg.feature_channels)
                         .state_dict().items()}
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8)
    assert encode_images(Encoder(cfg.width, cfg.blocks, cfg.feature_channels), images).shape == (
        3, cfg.feature_channels, size // 8, size // 8)


def test_prepare_images_replicates_gray_and_checks_input():
    gray = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 8, 8)
    x = prepare_images(gray)
    assert x.shape == (2, 3, 8, 8) and x[0].eq(-1).all() and x[1].eq(1).all()
    with pytest.raises(TaskonomyError, match="uint8"):
        prepare_images(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TaskonomyError, match="uint8"):
        prepare_images(np.zeros((1, 2, 8, 8), np.uint8))


def test_features_do_not_depend_on_the_batch():
    # GroupNorm: an image's representation is the same alone or among others (the feature cache relies on it)
    torch.manual_seed(0)
    encoder = Encoder(8, 1, 8)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(encode_images(encoder, images)[1:2], encode_images(encoder, images[1:2]))


def test_label_scaler_standardises_regression_and_leaves_classes():
    labels = np.random.default_rng(0).normal([[3.0], [-2.0]], [[2.0], [0.5]], (50, 2, 6)).astype(np.float16)
    scaler = fit_scaler(registry.get("curvature"), labels[:, :, :, None])
    scaled = scaler.apply(torch.from_numpy(labels).float()[:, :, :, None]).numpy()
    np.testing.assert_allclose(scaled.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(scaled.std(axis=(0, 2, 3)), 1, atol=1e-4)
    assert fit_scaler(registry.get("class_scene"), np.zeros(5, np.uint8)) == LabelScaler()
    assert LabelScaler.from_any(scaler.as_dict()) == scaler


def test_quality_row():
    row = quality_row("t", np.array([1.0, 1.0, 4.0]), np.array([2.0, 2.0, 3.0]))
    assert row["ratio"] == pytest.approx(6 / 7) and row["win_rate"] == pytest.approx(2 / 3)
    assert row["beats_baseline"]
    assert not quality_row("t", np.array([0.1, 3.0, 3.0]), np.array([2.0, 2.0, 2.0]))["beats_baseline"]
    with pytest.raises(TaskonomyError, match="equal, non-empty"):
        quality_row("t", np.ones(3), np.ones(2))


def test_baseline_is_the_train_prior(tiny_data):
    data = open_data(tiny_data)
    train, test = (data["labels/class_scene"].get_orthogonal_selection((data[f"splits/{s}"][:],))
                   for s in ("train", "test"))
    prior = (np.bincount(train, minlength=5) + 1.0) / (len(train) + 5)
    np.testing.assert_allclose(baseline_losses("class_scene", data), -np.log(prior[test]), rtol=1e-6)
    # L2: the train mean, zero in the scaled space
    labels = data["labels/room_layout"].get_orthogonal_selection((data["splits/test"][:],))
    scaler = fit_scaler(registry.get("room_layout"), data["labels/room_layout"].get_orthogonal_selection(
        (data["splits/train"][:],)))
    expected = scaler.apply(torch.from_numpy(labels)).square().mean(dim=1).double().numpy()
    np.testing.assert_allclose(baseline_losses("room_layout", data), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["segment_semantic", "egomotion"])
def test_training_is_deterministic_on_cpu(tiny_data, name):
    data = open_data(tiny_data)
    first, second, other = (train_task(name, data, SMALL, seed, "cpu", progress=False) for seed in (3, 3, 4))
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert first.epoch_losses == second.epoch_losses
    assert not all(torch.equal(first.state_dict[k], other.state_dict[k]) for k in first.state_dict)
    assert not torch.are_deterministic_algorithms_enabled()  # switched back after training


BORDERLINE_AT_TINY_SIZE = ("jigsaw", "room_layout")


def test_every_tiny_task_beats_its_trivial_baseline(tiny_config, tiny_run):
    with (tiny_run / "stage1_quality.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    print("\n" + "\n".join(f"{r['task']:18s} ratio {float(r['ratio']):.3f} win {float(r['win_rate']):.2f} "
                            f"best epoch {r['best_epoch']}" for r in rows))
    assert [r["task"] for r in rows] == tiny_config.data.task_names()
    # generator 4's cluttered rooms make jigsaw and room_layout borderline at this size: over four variants of
    # the tiny world their ratios were 0.82-0.97 and 0.88-0.98 (win rates 0.56-0.81), so for those two the test
    # asks for a loss below the baseline's and a win rate above 0.5, for every other task ratio < 0.9 (issue 15)
    failed = [f"{r['task']} (ratio {float(r['ratio']):.3f}, win rate {float(r['win_rate']):.2f})" for r in rows
              if (r["beats_baseline"] != "True" if r["task"] not in BORDERLINE_AT_TINY_SIZE
                  else not (float(r["ratio"]) < 1.0 and float(r["win_rate"]) > 0.5))]
    assert not failed, "not clearly better than the trivial baseline: " + ", ".join(failed)


def test_validation_holds_out_whole_train_scenes(tiny_data):
    data = open_data(tiny_data)
    mask = validation_mask(data, 0.1, seed=5)
    scenes = data["meta/scene"].get_orthogonal_selection((data["splits/train"][:],))
    held, kept = set(scenes[mask]), set(scenes[~mask])
    assert held and not held & kept
    assert len(held) == round(0.1 * len(held | kept))
    assert not validation_mask(data, 0.0, seed=5).any()
    np.testing.assert_array_equal(mask, validation_mask(data, 0.1, seed=5))


def test_task_epochs_override_the_epochs_for_their_task(tiny_data):
    data = open_data(tiny_data)
    cfg = SMALL.model_copy(update={"epochs": 1, "task_epochs": {"class_scene": 2}})
    assert cfg.epochs_for("class_object") == 1  # every other task keeps `epochs` (stamps: tests/taskonomy)
    assert len(train_task("class_scene", data, cfg, 1, "cpu", progress=False).validation_losses) == 2


def test_early_stopping_keeps_the_best_validation_epoch(tiny_data):
    data = open_data(tiny_data)
    result = train_task("class_scene", data, SMALL.model_copy(update={"epochs": 3}), 1, "cpu", progress=False)
    assert len(result.validation_losses) == 3
    assert result.best_epoch == 1 + int(np.argmin(result.validation_losses))
    n_held = int(validation_mask(data, SMALL.validation, 1).sum())
    assert result.n_train == data["splits/train"].shape[0] - n_held
