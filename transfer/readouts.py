"""Readout functions D_{s->t} of stage II, many at once: G readouts of one target as one grouped network.

    from taskonomy.transfer.readouts import build_readouts
    readouts = build_readouts(task, groups=12, in_channels=16, feature_size=4, image_size=32)
    out = readouts(z)   # z (B, G, C, h, w) -> (B, G, *output of one readout)

Readout g only ever sees its own slice of the input: every layer is a grouped convolution with
`groups=G`, so G readouts train in one forward and backward pass (one kernel launch per layer instead of
G) and their gradients stay independent. Summing their losses and stepping one AdamW over all the
weights trains each exactly as it would be trained alone (Adam is per parameter).

Architectures (small, as in the paper: the readout must not be able to solve the target by itself):
- dense: 3x3 conv, ReLU, 3x3 conv, ReLU on the feature grid, then a narrow decoder of the stage I kind:
  x2 nearest upsampling and a 3x3 conv per step, halving the channels, and a last x2 step by a 1x1 conv and
  pixel shuffle (r = image / feature size, a power of two). The original release also put a decoder after
  two small convs; a 1x1 conv with one pixel shuffle by r from the S/8 grid draws r x r blocks.
- global and pair: 3x3 conv, ReLU, average pooling, then a two-layer MLP (1x1 grouped convs). A pair
  readout reads the two views' features concatenated on channels (the siamese head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from taskonomy import TaskonomyError
from taskonomy.tasks import Task

__all__ = ["GroupedReadouts", "build_readouts", "readout_outputs"]

MLP_HIDDEN = 64
UP_MIN = 8  # narrowest upsampling conv of a dense readout


def readout_outputs(task: Task) -> int:
    """Output channels of one readout: class logits for classification, else the label channels."""
    return task.num_classes if task.num_classes > 0 else task.channels


class GroupedReadouts(nn.Module):
    """G independent readouts of one target; input (B, G, C, h, w), output (B, G, out[, S, S])."""

    def __init__(self, head: str, groups: int, in_channels: int, hidden: int, out_channels: int, upscale: int):
        super().__init__()
        g = groups
        self.head, self.groups, self.out_channels, self.upscale = head, g, out_channels, upscale
        self.conv1 = nn.Conv2d(g * in_channels, g * hidden, 3, padding=1, groups=g)
        if head == "dense":
            self.conv2 = nn.Conv2d(g * hidden, g * hidden, 3, padding=1, groups=g)
            steps = int(math.log2(upscale))
            if 2 ** steps != upscale:
                raise TaskonomyError(f"dense readouts upsample by powers of two, not by {upscale}")
            widths = [hidden] + [max(UP_MIN, hidden >> (k + 1)) for k in range(steps - 1)]
            self.up = nn.ModuleList(nn.Conv2d(g * a, g * b, 3, padding=1, groups=g)
                                    for a, b in zip(widths, widths[1:], strict=False))
            # the last x2 step is a 1x1 conv and a pixel shuffle: a grouped 3x3 conv at full resolution with
            # a few outputs per group takes oneDNN's slow path on CPU (20x the rest of the readout)
            self.out = nn.Conv2d(g * widths[-1], g * out_channels * 4, 1, groups=g)
        else:
            self.fc1 = nn.Conv2d(g * hidden, g * MLP_HIDDEN, 1, groups=g)
            self.out = nn.Conv2d(g * MLP_HIDDEN, g * out_channels, 1, groups=g)

    @torch.no_grad()
    def reset(self, seeds: list[int], in_channels: list[int]) -> None:
        """Initialise readout g from its own seed and its real input width, as if it were built alone.

        Zero-padded input channels get zero weights. So a readout's weights never depend on which other
        readouts share its group, and adding a source later leaves the earlier readouts' results unchanged.
        """
        layers = [self.conv1, self.conv2, *self.up] if self.head == "dense" else [self.conv1, self.fc1]
        layers.append(self.out)
        for g, (seed, c_in) in enumerate(zip(seeds, in_channels, strict=True)):
            gen = torch.Generator().manual_seed(seed)
            for k, layer in enumerate(layers):
                rows = layer.out_channels // self.groups
                weight = layer.weight[g * rows:(g + 1) * rows]
                fan_in = (c_in if k == 0 else weight.shape[1]) * weight[0, 0].numel()
                bound = 1.0 / math.sqrt(fan_in)  # PyTorch's default for convolutions
                weight.zero_()
                weight[:, :c_in if k == 0 else weight.shape[1]].uniform_(-bound, bound, generator=gen)
                layer.bias[g * rows:(g + 1) * rows].uniform_(-bound, bound, generator=gen)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, g = z.shape[:2]
        if g != self.groups:
            raise TaskonomyError(f"readouts expect {self.groups} groups of features, got {g}")
        x = F.relu(self.conv1(z.flatten(1, 2)))
        if self.head == "dense":
            x = F.relu(self.conv2(x))
            for conv in self.up:
                x = F.relu(conv(F.interpolate(x, scale_factor=2.0, mode="nearest")))
            x = self.out(x)  # (B, G*out*4, S/2, S/2)
            h, w = x.shape[-2:]
            x = F.pixel_shuffle(x.view(b * g, -1, h, w), 2)
            return x.view(b, g, self.out_channels, 2 * h, 2 * w)
        x = x.mean(dim=(2, 3), keepdim=True)
        return self.out(F.relu(self.fc1(x))).view(b, g, self.out_channels)


def build_readouts(task: Task, groups: int, in_channels: int, feature_size: int, image_size: int,
                   hidden: int = 32) -> GroupedReadouts:
    """`groups` readouts into `task`, each reading `in_channels` x feature_size^2 features."""
    if task.head not in ("dense", "global", "pair"):
        raise TaskonomyError(f"task {task.name} has head {task.head!r}: it cannot be a transfer target")
    if task.head == "dense" and image_size % feature_size:
        raise TaskonomyError(f"image size {image_size} is not a multiple of the feature size {feature_size}")
    return GroupedReadouts(task.head, groups, in_channels, hidden, readout_outputs(task),
                           image_size // feature_size)
