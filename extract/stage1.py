"""Stage I: train one task-specific network on the train split and measure it on the test split.

    taskonomy --config configs/tiny.yaml train

Regression labels are standardised per channel with the train split's mean and std, so every task's
loss is O(1) and one learning rate suits all; class labels are left as they are. Every loss here
(training, test, baseline) is the task's registered per-image loss in that scaled space, so a test
loss and its baseline are directly comparable.

The trivial baseline predicts the same thing for every image, fitted on the train split: the train
mean for regression (zero in scaled space; `constant="best"` gives the median under L1, the constant
that minimises an absolute error), the smoothed class prior as logits for cross-entropy (per pixel: the
prior over all train pixels), the mean train distribution for soft cross-entropy, the positive rate for BCE.

Early stopping: `train.validation` of the train split's scenes (whole scenes, so no view of a held-out
room was seen in training) is held out; the weights of the epoch with the lowest validation loss are
kept. With a few hundred images the small heads memorise (point matching reaches a train loss of 0.03
while its test loss rises above the baseline's); the held-out scenes catch that without looking at test.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import TrainConfig
from taskonomy.extract.networks import TaskNetwork, build_network, prepare_images
from taskonomy.losses import get_loss
from taskonomy.tasks import Task
from taskonomy.torchutil import (CLASS_LOSSES, EVAL_BATCH, LabelScaler, channel_axes, deterministic, fit_scaler,
                                 resolve_device)
from taskonomy.workers import seeded

__all__ = ["CLASS_LOSSES", "LabelScaler", "TrainResult", "as_task", "baseline_losses", "fit_scaler", "input_arrays",
           "load_split", "network_cost", "quality_row", "resolve_device", "restore_network", "test_losses",
           "train_task", "validation_mask", "deterministic"]

# pair tasks whose label does not change when the two views are swapped: training swaps a random half
# of each batch, which doubles the pairs seen (point matching memorises 500 pairs within a few epochs)
SYMMETRIC_PAIRS = frozenset({"point_matching"})
WARMUP_FRACTION = 0.05  # of all steps: a short linear warm-up keeps AdamW's first steps from overshooting


@dataclass
class TrainResult:
    """A trained network (CPU tensors), its label scaler, and how training went."""

    task: str
    state_dict: dict[str, torch.Tensor]
    scaler: dict[str, list[float]]
    epoch_losses: list[float]
    validation_losses: list[float]  # mean loss on the held-out train scenes after each epoch (empty: none)
    best_epoch: int  # 1-based epoch whose weights were kept
    seconds: float
    images_per_second: float  # training samples (a pair counts once) per second, all epochs
    n_train: int
    seed: int
    network: TaskNetwork | None = field(default=None, repr=False)  # the same weights, ready for test_losses


def input_arrays(task: Task) -> tuple[str, str | None]:
    """data.zarr arrays the network reads: (first input, second view or None)."""
    if task.head == "pair":
        return "images/rgb", f"views/{task.name}"
    return ("images/rgb" if task.modality == "rgb" else f"inputs/{task.modality}"), None


def as_task(task: Task | str) -> Task:
    """A Task as it is, or the registered task of that name (a target added from the cache travels as a Task)."""
    return task if isinstance(task, Task) else registry.get(task)


def load_split(task: Task, data: zarr.Group, split: str,
               labels: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """(inputs uint8 (N, C, S, S), second views or None, labels in their stored dtype) of one split.

    `labels`: one label per data.zarr image (a target added from the cache); default data.zarr's labels.
    """
    label_array = [] if labels is not None else [f"labels/{task.name}"]
    for needed in (f"splits/{split}", *label_array, *filter(None, input_arrays(task))):
        if needed not in data:
            raise TaskonomyError(f"data.zarr has no {needed!r} (task {task.name}); regenerate it with "
                                 f"`taskonomy data` for a config that lists {task.name}")
    index = data[f"splits/{split}"][:]
    if len(index) == 0:
        raise TaskonomyError(f"data.zarr split {split!r} is empty: no images to train or test {task.name} on")

    def read(path: str) -> np.ndarray:
        return np.asarray(data[path].get_orthogonal_selection((index,)))

    first, second = input_arrays(task)
    x_b = torch.from_numpy(read(second)) if second else None
    y = labels[index] if labels is not None else read(f"labels/{task.name}")
    return torch.from_numpy(read(first)), x_b, y


def _labels_tensor(task: Task, labels: np.ndarray) -> torch.Tensor:
    # class indices as int64 (what cross-entropy expects); regression stays float16 until it is scaled
    return torch.from_numpy(labels.astype(np.int64) if task.label_dtype == "uint8" else labels)


def _forward(network: TaskNetwork, x: torch.Tensor, x_b: torch.Tensor | None) -> torch.Tensor:
    return network(prepare_images(x), prepare_images(x_b)) if x_b is not None else network(prepare_images(x))


def _cosine_with_warmup(total_steps: int):
    warmup = max(1, round(WARMUP_FRACTION * total_steps))

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))

    return factor


def validation_mask(data_group: zarr.Group, fraction: float, seed: int, split: str = "train") -> np.ndarray:
    """Boolean mask over `split`: the images of a `fraction` of its scenes, chosen by `seed`."""
    index = data_group[f"splits/{split}"][:]
    if fraction <= 0 or "meta/scene" not in data_group:
        return np.zeros(len(index), bool)
    scenes = np.asarray(data_group["meta/scene"].get_orthogonal_selection((index,)))
    unique = np.unique(scenes)
    n_held = min(len(unique) - 1, round(fraction * len(unique)))
    if n_held < 1:
        return np.zeros(len(index), bool)
    held = np.random.default_rng([seed, 3]).choice(unique, n_held, replace=False)
    return np.isin(scenes, held)


def _take(mask: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [t[mask] if t is not None else None for t in tensors]


@torch.no_grad()
def _per_image_losses(network: TaskNetwork, loss_fn, scaler: LabelScaler, x: torch.Tensor, x_b: torch.Tensor | None,
                      y: torch.Tensor, device: torch.device, batch: int = EVAL_BATCH) -> torch.Tensor:
    """Per-image losses (N,) float64 on the CPU of `network` in eval mode; batches move to `device`."""
    out = []
    for lo in range(0, len(x), batch):
        second = x_b[lo:lo + batch].to(device) if x_b is not None else None
        pred = _forward(network, x[lo:lo + batch].to(device), second)
        out.append(loss_fn(pred, scaler.apply(y[lo:lo + batch].to(device))).double().cpu())
    return torch.cat(out)


def _mean_loss(network: TaskNetwork, loss_fn, scaler: LabelScaler, x: torch.Tensor, x_b: torch.Tensor | None,
               y: torch.Tensor) -> float:
    network.eval()
    total = float(_per_image_losses(network, loss_fn, scaler, x, x_b, y, x.device).sum())
    network.train()
    return total / len(x)


def network_cost(task: Task | str) -> float:
    """Relative work of training one network of the stage I architecture for `task` on a split (to start the
    longest jobs first): a dense decoder costs about twice a global head, a pair head reads two views."""
    head = as_task(task).head
    return (2.0 if head == "dense" else 1.0) * (2.0 if head == "pair" else 1.0)


def train_task(task_name: Task | str, data_group: zarr.Group, train_cfg: TrainConfig, seed: int,
               device: str | torch.device | None = "auto", progress: bool = True, split: str = "train",
               scaler: LabelScaler | dict[str, Any] | None = None, labels: np.ndarray | None = None) -> TrainResult:
    """Train `task_name`'s network on `split`: AdamW, cosine decay, no augmentation, early stopping.

    `scaler` fixes the label standardisation (default: fitted on the training images); `labels` replace
    data.zarr's (see load_split). Same seed, same data, CPU: the same weights bit for bit.
    """
    task = as_task(task_name)
    device = resolve_device(device)
    x, x_b, raw = load_split(task, data_group, split, labels)
    held = torch.from_numpy(validation_mask(data_group, train_cfg.validation, seed, split))
    scaler = LabelScaler.from_any(scaler) if scaler is not None else fit_scaler(task, raw[~held.numpy()])
    y = _labels_tensor(task, raw)
    (x_val, xb_val, y_val), (x, x_b, y) = _take(held, x, x_b, y), _take(~held, x, x_b, y)
    n, batch = len(x), min(train_cfg.batch, len(x))
    steps = math.ceil(n / batch)
    x, y, x_val, y_val = x.to(device), y.to(device), x_val.to(device), y_val.to(device)
    x_b, xb_val = (t.to(device) if t is not None else None for t in (x_b, xb_val))
    loss_fn = get_loss(task.loss)
    epochs = train_cfg.epochs_for(task.name)
    start = time.perf_counter()
    with deterministic(device):
        with seeded(seed):  # the default initialisation draws from torch's global generator
            network = build_network(task, train_cfg, x.shape[-1]).to(device).train()
        optimizer = torch.optim.AdamW(network.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay,
                                      fused=True)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(epochs * steps))
        order = torch.Generator().manual_seed(seed)  # CPU generator: the same shuffles on any device
        epoch_losses, validation_losses, best = [], [], (math.inf, 0, None)
        bar = tqdm(total=epochs * n, desc=f"train {task.name}", unit="img", disable=not progress)
        for epoch in range(1, epochs + 1):
            total = 0.0
            for idx in torch.randperm(n, generator=order).split(batch):
                idx = idx.to(device)
                first, second = x[idx], x_b[idx] if x_b is not None else None
                if task.name in SYMMETRIC_PAIRS:
                    swap = (torch.rand(len(idx), generator=order) < 0.5).to(device).view(-1, 1, 1, 1)
                    first, second = torch.where(swap, second, first), torch.where(swap, first, second)
                pred = _forward(network, first, second)
                loss = loss_fn(pred, scaler.apply(y[idx])).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
                bar.update(len(idx))
                bar.set_postfix(loss=f"{loss.item():.4f}", val=f"{best[0]:.4f}")
            epoch_losses.append(total / n)
            if len(x_val):
                validation_losses.append(_mean_loss(network, loss_fn, scaler, x_val, xb_val, y_val))
            if not len(x_val) or validation_losses[-1] < best[0]:
                best = (validation_losses[-1] if len(x_val) else math.inf, epoch,
                        {k: v.detach().clone() for k, v in network.state_dict().items()})
        bar.close()
    seconds = time.perf_counter() - start
    state = {k: v.cpu() for k, v in best[2].items()}
    network.load_state_dict(state)
    network = network.cpu().eval()
    return TrainResult(task.name, state, scaler.as_dict(), epoch_losses, validation_losses, best[1], seconds,
                       epochs * n / max(seconds, 1e-9), n, seed, network)


def restore_network(task_name: Task | str, train_cfg: TrainConfig, image_size: int,
                    state_dict: dict[str, torch.Tensor]) -> TaskNetwork:
    """A trained network from its state dict (e.g. a checkpoint's), in eval mode on the CPU."""
    network = build_network(as_task(task_name), train_cfg, image_size)
    network.load_state_dict(state_dict)
    return network.eval()


@torch.no_grad()
def test_losses(task_name: Task | str, network: TaskNetwork, scaler: LabelScaler | dict[str, Any] | None,
                data_group: zarr.Group, split: str = "test", device: str | torch.device | None = "auto",
                batch: int = EVAL_BATCH, labels: np.ndarray | None = None) -> np.ndarray:
    """Per-image losses (N_split,) float64 of `network` on `split`, in the scaled label space."""
    task = as_task(task_name)
    device = resolve_device(device)
    scaler = LabelScaler.from_any(scaler)
    x, x_b, raw = load_split(task, data_group, split, labels)
    y = _labels_tensor(task, raw)
    loss_fn = get_loss(task.loss)
    network = network.to(device).eval()
    return _per_image_losses(network, loss_fn, scaler, x, x_b, y, device, batch).numpy()


def _baseline_prediction(task: Task, train: np.ndarray, scaler: LabelScaler, constant: str) -> torch.Tensor:
    """The constant prediction of one image (no batch axis): scaled labels, or logits for classes."""
    k = task.num_classes
    if task.loss in ("ce", "ce_dense"):
        # Laplace-smoothed prior: a class never seen in training must not cost an infinite loss
        counts = np.bincount(train.astype(np.int64).ravel(), minlength=k)[:k] + 1.0
        logits = torch.from_numpy(np.log(counts / counts.sum())).float()
        return logits if task.loss == "ce" else logits.view(k, 1, 1)
    if task.loss == "soft_ce":
        prior = train.astype(np.float64).mean(axis=0) + 1e-6
        return torch.from_numpy(np.log(prior / prior.sum())).float()
    if task.loss == "bce":
        rate = np.clip(train.astype(np.float64).mean(axis=channel_axes(train)), 1e-4, 1 - 1e-4)
        return torch.from_numpy(np.log(rate / (1 - rate))).float().view(-1, *(1,) * (train.ndim - 2))
    if task.loss not in ("l1", "l2"):
        raise TaskonomyError(f"task {task.name}: no trivial baseline for loss {task.loss!r}")
    if task.loss == "l1" and constant == "best":
        # the median minimises an absolute error (all images have the same number of pixels)
        value = np.median(np.moveaxis(train, 1, 0).reshape(train.shape[1], -1).astype(np.float32), axis=1)
    else:
        value = train.mean(axis=channel_axes(train), dtype=np.float64)
    shape = (1, -1, *(1,) * (train.ndim - 2))
    return scaler.apply(torch.from_numpy(np.asarray(value, np.float32)).view(shape))[0]


def baseline_losses(task_name: str, data_group: zarr.Group, split: str = "test",
                    scaler: LabelScaler | dict[str, Any] | None = None, constant: str = "mean") -> np.ndarray:
    """Per-image losses (N_split,) float64 of the trivial baseline fitted on the train split.

    `constant`: "mean" predicts the train mean of regression labels (zero in the scaled space); "best"
    the constant that minimises the task's loss (the median under L1). Both use the class prior for
    classification. `scaler` is the trained network's (default: fitted on the train split, the same).
    """
    if constant not in ("mean", "best"):
        raise TaskonomyError(f"baseline constant must be 'mean' or 'best', got {constant!r}")
    task = registry.get(task_name)
    labels = data_group[f"labels/{task.name}"]
    train = np.asarray(labels.get_orthogonal_selection((data_group["splits/train"][:],)))
    scaler = LabelScaler.from_any(scaler) if scaler is not None else fit_scaler(task, train)
    prediction = _baseline_prediction(task, train, scaler, constant)
    target = _labels_tensor(task, np.asarray(labels.get_orthogonal_selection((data_group[f"splits/{split}"][:],))))
    loss_fn = get_loss(task.loss)
    pixels = tuple(target.shape[-2:]) if task.head == "dense" else ()
    out = [loss_fn(prediction.expand(len(y), prediction.shape[0], *pixels), scaler.apply(y)).double()
           for y in target.split(EVAL_BATCH)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def quality_row(task_name: str, test: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """How the network compares with the trivial baseline on the same images.

    `beats_baseline`: mean loss below 0.9 x the baseline's AND lower loss on most images, so neither a
    few outliers nor a hair's-breadth mean difference can pass it alone.
    """
    test, baseline = np.asarray(test, np.float64), np.asarray(baseline, np.float64)
    if test.shape != baseline.shape or test.ndim != 1 or len(test) == 0:
        raise TaskonomyError(f"{task_name}: expected two equal, non-empty per-image loss vectors, "
                             f"got shapes {test.shape} and {baseline.shape}")
    mean_test, mean_base = float(test.mean()), float(baseline.mean())
    ratio = mean_test / mean_base if mean_base > 0 else math.inf
    win = float((test < baseline).mean())
    return {"task": task_name, "n_test": len(test), "test_loss": mean_test, "baseline_loss": mean_base,
            "ratio": ratio, "win_rate": win, "beats_baseline": bool(ratio < 0.9 and win > 0.5)}
