"""Per-image losses, looked up by the name a task registers (`Task.loss`).

Each returns one value per image, shape (B,): stage III compares transfers image by image, so a
batch mean would throw away exactly what the tournament needs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from taskonomy import TaskonomyError

__all__ = ["LOSSES", "get_loss", "register_loss"]

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image."""
    return _per_image((pred - target.to(pred.dtype)).abs())


def l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image."""
    return _per_image((pred - target.to(pred.dtype)).square())


def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one class index per image: logits (B, K), target (B,)."""
    return F.cross_entropy(logits, target.long(), reduction="none")


def ce_dense(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy averaged per image: logits (B, K, H, W), target (B, H, W)."""
    return _per_image(F.cross_entropy(logits, target.long(), reduction="none"))


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution per image: logits (B, K), target (B, K) rows summing to 1."""
    return -(target.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(dim=1)


def bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged per image."""
    return _per_image(F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none"))


LOSSES: dict[str, Loss] = {"l1": l1, "l2": l2, "ce": ce, "ce_dense": ce_dense, "soft_ce": soft_ce, "bce": bce}


def register_loss(name: str, fn: Loss) -> None:
    """Add a per-image loss; `fn(pred, target)` must return shape (B,)."""
    if name in LOSSES:
        raise TaskonomyError(f"loss {name!r} is already registered")
    LOSSES[name] = fn


def get_loss(name: str) -> Loss:
    """The per-image loss called `name`."""
    if name not in LOSSES:
        raise TaskonomyError(f"unknown loss {name!r}; expected one of {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
