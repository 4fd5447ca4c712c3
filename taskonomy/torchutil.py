"""Torch helpers shared by stage I, stage II, the report and the benchmarks: the device, determinism, and the
label standardisation every target's losses are measured in.

    from taskonomy.torchutil import resolve_device, deterministic
    with deterministic(resolve_device("auto")):
        ...                                   # bit-for-bit repeatable training on CPU
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from taskonomy import TaskonomyError
from taskonomy.tasks import Task

__all__ = ["CLASS_LOSSES", "EVAL_BATCH", "LabelScaler", "channel_axes", "deterministic", "fit_scaler", "resolve_device"]

CLASS_LOSSES = ("ce", "ce_dense", "soft_ce", "bce")
EVAL_BATCH = 256  # images per forward pass when measuring per-image test losses


@dataclass
class LabelScaler:
    """Per-channel standardisation of regression labels: (y - mean) / std. Empty lists = identity."""

    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def apply(self, labels: torch.Tensor) -> torch.Tensor:
        """Scale a batch of labels (B, C, ...) to float32; class labels pass through unchanged."""
        if not self.mean:
            return labels
        shape = (1, len(self.mean)) + (1,) * (labels.ndim - 2)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=labels.device).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32, device=labels.device).view(shape)
        return (labels.float() - mean) / std

    def as_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    @classmethod
    def from_any(cls, value: LabelScaler | dict[str, Any] | None) -> LabelScaler:
        if value is None or isinstance(value, LabelScaler):
            return value or cls()
        return cls(list(value.get("mean", [])), list(value.get("std", [])))


def channel_axes(labels: np.ndarray) -> tuple[int, ...]:
    """Every axis except the channel axis 1: images (and pixels for dense labels)."""
    return (0, *range(2, labels.ndim))


def fit_scaler(task: Task, labels: np.ndarray) -> LabelScaler:
    """The standardisation of `task`'s regression labels (N, C, ...) fitted on them; identity for classes."""
    if task.loss in CLASS_LOSSES:
        return LabelScaler()
    axes = channel_axes(labels)
    mean = labels.mean(axis=axes, dtype=np.float64)
    std = labels.std(axis=axes, dtype=np.float64)
    # a constant channel carries nothing to learn; std 1 keeps it finite instead of dividing by zero
    std = np.where(std > 1e-8, std, 1.0)
    return LabelScaler(mean.tolist(), std.tolist())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto' (or None) is CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TaskonomyError("train.device is 'cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


_DETERMINISTIC_LOCK = threading.Lock()
_DETERMINISTIC_USERS: list[None] = []  # blocks inside `deterministic` now, in any thread
_DETERMINISTIC_BEFORE: list[bool] = []  # the switch as the first of them found it


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels around training on CPU (every op used has one there).

    On CUDA this is not switched on: it needs CUBLAS_WORKSPACE_CONFIG set before CUDA starts and
    refuses some losses' kernels, so CUDA runs are seeded but not bitwise reproducible.
    The switch is process-wide: jobs training side by side in threads (taskonomy.workers) share one
    switch, counted, so the first job to finish does not turn it off under the others.
    """
    if device.type != "cpu":
        yield
        return
    with _DETERMINISTIC_LOCK:
        if not _DETERMINISTIC_USERS:
            _DETERMINISTIC_BEFORE[:] = [torch.are_deterministic_algorithms_enabled(),
                                        torch.is_deterministic_algorithms_warn_only_enabled()]
            torch.use_deterministic_algorithms(True, warn_only=False)
        _DETERMINISTIC_USERS.append(None)
    try:
        yield
    finally:
        with _DETERMINISTIC_LOCK:
            _DETERMINISTIC_USERS.pop()
            if not _DETERMINISTIC_USERS:
                torch.use_deterministic_algorithms(_DETERMINISTIC_BEFORE[0], warn_only=_DETERMINISTIC_BEFORE[1])
