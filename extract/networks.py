"""Task-specific networks of stage I: one encoder architecture for every task, a decoder per head.

    taskonomy --config configs/tiny.yaml train

The encoder is a small ResNet (stem conv, 3 stages that each halve the resolution with `blocks`
residual blocks of widths w, 2w, 4w, then a 1x1 conv to `feature_channels`): at S px the
representation is feature_channels x S/8 x S/8. It uses GroupNorm, so a network computes the same
thing in train and eval mode, each image's features do not depend on the rest of its batch, and an
untrained encoder (the `random` control) still gives well-scaled features. Every task sees three
input channels (gray is replicated), so all encoders have the same parameter names and shapes.

Decoders read only the representation, as in Taskonomy: dense heads upsample it back to S x S,
global heads apply two convs, pool to a 2 x 2 grid and apply a small MLP, pair heads run both views through the
same encoder and read the channel-concatenated features with a global head. Only ops with
deterministic kernels on CPU and CUDA are used (nearest upsampling, avg_pool2d, no adaptive pooling).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskonomy import TaskonomyError
from taskonomy.config import TrainConfig
from taskonomy.tasks import Task

__all__ = ["DenseDecoder", "Encoder", "GlobalDecoder", "TaskNetwork", "build_network", "encode_images",
           "output_channels", "prepare_images"]

HIDDEN = 64  # width of the global/pair MLP
POOLED = 1  # global heads pool their conv features to POOLED x POOLED before the MLP


def _groups(channels: int) -> int:
    """GroupNorm groups of at least 4 channels (smaller groups make noisy statistics)."""
    for g in (8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def _conv_norm(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(_groups(c_out), c_out))


class ResidualBlock(nn.Module):
    """Two 3x3 convs with a shortcut (a strided 1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_norm(c_in, c_out, stride)
        self.conv2 = _conv_norm(c_out, c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(_groups(c_out), c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class Encoder(nn.Module):
    """Images (B, 3, S, S), normalised by `prepare_images`, to features (B, feature_channels, S/8, S/8)."""

    def __init__(self, width: int = 16, blocks: int = 1, feature_channels: int = 16):
        super().__init__()
        self.feature_channels = feature_channels
        self.stem = _conv_norm(3, width)
        stages, c_in = [], width
        for c_out in (width, 2 * width, 4 * width):
            stages.append(nn.Sequential(*(ResidualBlock(c_in if b == 0 else c_out, c_out, 2 if b == 0 else 1)
                                          for b in range(blocks))))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.project = nn.Conv2d(c_in, feature_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(F.relu(self.stem(x))))


class DenseDecoder(nn.Module):
    """Representation (B, C, S/8, S/8) to a map (B, out, S, S): three x2 nearest upsamplings with convs."""

    def __init__(self, feature_channels: int, width: int, out_channels: int):
        super().__init__()
        self.entry = _conv_norm(feature_channels, 4 * width)
        self.up = nn.ModuleList([_conv_norm(4 * width, 2 * width), _conv_norm(2 * width, width)])
        # the last step works at full resolution, where a width x width conv would cost more than the
        # whole encoder: go straight to the outputs
        self.head = nn.Conv2d(width, out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.entry(z))
        for conv in self.up:
            x = F.relu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
        return self.head(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class GlobalDecoder(nn.Module):
    """Representation (B, C, h, h) to a vector (B, out): two convs, average pooling to 2 x 2, an MLP.

    Pooling the conv features (rather than flattening the map) generalises far better from a few
    hundred images: flattening let the MLP memorise scenes (egomotion: train loss 0.05, test worse than
    the baseline). The convs see neighbouring cells of both views of a pair, so local motion can be
    measured before it is averaged; the 2 x 2 grid keeps a coarse layout for room layout and poses.
    """

    def __init__(self, in_channels: int, feature_size: int, out_channels: int, mid: int = 32):
        super().__init__()
        # the second conv has no GroupNorm: right before global pooling it would fix each image's mean
        # activation per group, and the pooled features would hardly differ between images
        self.convs = nn.Sequential(_conv_norm(in_channels, mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, 1, 1), nn.ReLU())
        self.pool = max(1, feature_size // POOLED)
        side = feature_size // self.pool
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(mid * side * side, HIDDEN), nn.ReLU(),
                                 nn.Linear(HIDDEN, out_channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.convs(z)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        return self.mlp(x)


class TaskNetwork(nn.Module):
    """Encoder plus the task's decoder; pair tasks call `network(x_a, x_b)` (one shared encoder)."""

    def __init__(self, task: Task, encoder: Encoder, decoder: nn.Module):
        super().__init__()
        self.task_name, self.head = task.name, task.head
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor, x_b: torch.Tensor | None = None) -> torch.Tensor:
        if self.head == "pair":
            if x_b is None:
                raise TaskonomyError(f"task {self.task_name} is a pair task: call network(view_a, view_b)")
            # both views in one encoder call: one pass over the weights, identical GroupNorm per image
            z = self.encoder(torch.cat([x, x_b]))
            z = torch.cat(z.chunk(2), dim=1)
        else:
            z = self.encoder(x)
        return self.decoder(z)


def output_channels(task: Task) -> int:
    """Outputs of the task's head: class logits for classification, else the label channels."""
    return task.num_classes if task.num_classes > 0 else task.channels


def build_network(task: Task, train_cfg: TrainConfig, image_size: int) -> TaskNetwork:
    """The encoder-decoder of `task` at `image_size` px (a multiple of 8)."""
    if task.head not in ("dense", "global", "pair"):
        raise TaskonomyError(f"task {task.name} has head {task.head!r}: only dense, global and pair tasks train")
    if image_size % 8:
        raise TaskonomyError(f"image size {image_size} is not a multiple of 8 (the encoder downsamples by 8)")
    fc, width, h = train_cfg.feature_channels, train_cfg.width, image_size // 8
    encoder = Encoder(width, train_cfg.blocks, fc)
    out = output_channels(task)
    if task.head == "dense":
        decoder: nn.Module = DenseDecoder(fc, width, out)
    else:
        decoder = GlobalDecoder(fc * (2 if task.head == "pair" else 1), h, out)
    return TaskNetwork(task, encoder, decoder)


def prepare_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 (B, C, S, S) with C = 1 or 3 to float (B, 3, S, S) in [-1, 1]; gray is replicated to 3 channels."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
        raise TaskonomyError(f"expected uint8 images of shape (B, 1 or 3, S, S), got {x.dtype} {tuple(x.shape)}")
    x = x.float().mul_(2.0 / 255.0).sub_(1.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


@torch.no_grad()
def encode_images(encoder: Encoder, images: torch.Tensor | np.ndarray,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Features (B, C, S/8, S/8) of uint8 images, on the encoder's device, in eval mode."""
    if device is None:
        device = next(encoder.parameters()).device
    encoder.eval()
    return encoder(prepare_images(torch.as_tensor(images).to(device)))
