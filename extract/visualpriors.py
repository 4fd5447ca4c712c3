"""Taskonomy's published PyTorch encoders (alexsax/visual-prior), rebuilt from the architecture facts.

Load a local checkpoint and encode images into the 8x16x16 representations that transfers read:

    encoder = load_taskonomy_encoder("normal_encoder-f5e2c773....pth")
    with torch.inference_mode():
        features = encoder(preprocess(images_uint8))  # (B, 8, 16, 16)

Nothing is downloaded: users fetch the `{task}_encoder-{sha256}.pth` files themselves. Module and parameter
names follow the published TaskonomyEncoder so its state dicts load unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from taskonomy import TaskonomyError

__all__ = [
    "Bottleneck",
    "TaskonomyEncoder",
    "load_taskonomy_encoder",
    "preprocess",
    "save_taskonomy_checkpoint",
]

# Published names carry the full sha256; ours carry 8 hex digits. torch.hub treats the digits as a prefix too.
_NAME_RE = re.compile(r"^(?P<task>.+)_encoder-(?P<digest>[0-9a-f]{8,64})\.pth$")
_BLOCKS = (3, 4, 6, 3)
_WIDTHS = (64, 128, 256, 512)
_STRIDES = (2, 2, 1, 1)  # applied in the LAST block of each layer (TF-slim), not the first as in torchvision
_EXPANSION = 4
_FEATURE_CHANNELS = 8


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1, 3x3 with the stride, 1x1 to 4x width) with a residual shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if in_channels != out_channels and stride != 1:
            raise ValueError("a Taskonomy block changes either its channels or its stride, not both")
        self.downsample: nn.Module | None = None
        if in_channels != out_channels:
            # A projection at stride 1: the stride comes later, in the layer's last block.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels)
            )
        elif stride != 1:
            # TF-slim subsamples the identity (a 1x1 max-pool is x[..., ::s, ::s]); it has no parameters.
            self.downsample = nn.Sequential(nn.MaxPool2d(kernel_size=1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


def _make_layer(in_channels: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` bottlenecks: the first projects channels, the last applies the stride."""
    out_channels = width * _EXPANSION
    layers = [Bottleneck(in_channels, width)]
    layers += [Bottleneck(out_channels, width) for _ in range(blocks - 2)]
    layers.append(Bottleneck(out_channels, width, stride=stride))
    return nn.Sequential(*layers)


class TaskonomyEncoder(nn.Module):
    """ResNet-50 trunk + `compress1` to 8 channels: (B, 3, H, W) in [-1, 1] -> (B, 8, H/16, W/16).

    `normalize_outputs` applies GroupNorm(8, 8, affine=False), as visualpriors does for its features.
    """

    def __init__(self, normalize_outputs: bool = True) -> None:
        super().__init__()
        self.normalize_outputs = normalize_outputs
        # padding=0 here: forward pads explicitly, matching TF's stride-2 'SAME' arithmetic at 256 px.
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        in_channels = 64
        for i, (blocks, width, stride) in enumerate(zip(_BLOCKS, _WIDTHS, _STRIDES), start=1):
            self.add_module(f"layer{i}", _make_layer(in_channels, width, blocks, stride))
            in_channels = width * _EXPANSION
        self.compress1 = nn.Conv2d(in_channels, _FEATURE_CHANNELS, kernel_size=3, padding=1, bias=False)
        self.compress_bn = nn.BatchNorm2d(_FEATURE_CHANNELS)
        self.relu1 = nn.ReLU(inplace=True)
        self.groupnorm = nn.GroupNorm(_FEATURE_CHANNELS, _FEATURE_CHANNELS, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (3, 3, 3, 3))
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.relu1(self.compress_bn(self.compress1(x)))
        return self.groupnorm(x) if self.normalize_outputs else x


def preprocess(images_uint8: torch.Tensor, size: int = 256) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) float32 in [-1, 1], as the encoders expect."""
    if images_uint8.dtype != torch.uint8 or images_uint8.ndim != 4 or images_uint8.shape[1] != 3:
        raise ValueError(
            f"expected a (B, 3, H, W) uint8 tensor, got {tuple(images_uint8.shape)} {images_uint8.dtype}"
        )
    x = images_uint8.float() / 127.5 - 1.0
    if tuple(x.shape[-2:]) != (size, size):
        # Antialias when shrinking: visualpriors resizes with PIL, which filters; torch's antialias mimics it.
        shrink = x.shape[-2] > size or x.shape[-1] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp_(-1.0, 1.0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, shortened: our errors print as one line."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _weights_only_detail(error: pickle.UnpicklingError) -> tuple[bool, str]:
    """(refused code?, the useful part) of torch's long weights_only message."""
    text = " ".join(str(error).split())
    match = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\. | Check the documentation|$)", text)
    detail = match[1].strip() if match else ""
    # Bad opcodes mean broken bytes; anything else (globals, classes, reduce calls) is pickled code.
    corrupt = not detail or detail.lower().startswith("unsupported operand")
    return not corrupt, _first_line(ValueError(detail or text))


def _read_checkpoint(path: Path) -> object:
    """torch.load with weights_only, every failure turned into a one-line TaskonomyError."""
    if not path.is_file():
        raise TaskonomyError(f"encoder checkpoint {path} does not exist (or is not a file)")
    match = _NAME_RE.match(path.name)
    if match and not _sha256(path).startswith(match["digest"]):
        raise TaskonomyError(
            f"encoder checkpoint {path}: sha256 does not start with {match['digest'][:16]} as its name says; "
            "the file is corrupted or renamed"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused, detail = _weights_only_detail(error)
        if refused:
            # weights_only refuses globals it does not know: unpickling the file would run code.
            raise TaskonomyError(
                f"encoder checkpoint {path} holds pickled objects other than tensors, refused for safety "
                f"(weights_only): {detail}"
            ) from None
        raise TaskonomyError(f"encoder checkpoint {path} is truncated or corrupt: {detail}") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        raise TaskonomyError(f"encoder checkpoint {path} is truncated or corrupt: {_first_line(error)}") from None


def _extract_state_dict(path: Path, checkpoint: object) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint ({'state_dict': ...}) or of a bare state dict."""
    if not isinstance(checkpoint, dict):
        raise TaskonomyError(
            f"encoder checkpoint {path} holds a {type(checkpoint).__name__}, expected a dict with a 'state_dict'"
        )
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state:
        raise TaskonomyError(f"encoder checkpoint {path} has no state dict (expected a dict of tensors)")
    not_tensors = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TaskonomyError(
            f"encoder checkpoint {path} has no state dict: entries that are not named tensors, "
            f"e.g. {', '.join(map(repr, not_tensors[:3]))}"
        )
    # nn.DataParallel saves every name under `module.`.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _check_names_and_shapes(path: Path, state: dict[str, torch.Tensor], encoder: TaskonomyEncoder) -> None:
    """Refuse missing, unexpected or mis-shaped entries, naming a few of each."""
    expected = encoder.state_dict()
    # num_batches_tracked only drives BN momentum in training; converted checkpoints may lack it.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise TaskonomyError(
            f"encoder checkpoint {path} is not a TaskonomyEncoder state dict: {'; '.join(parts)}"
        )
    wrong = [
        f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise TaskonomyError(f"encoder checkpoint {path} has wrongly shaped tensors: {', '.join(wrong[:3])}")


def load_taskonomy_encoder(path: str | os.PathLike, normalize_outputs: bool = True) -> TaskonomyEncoder:
    """A frozen TaskonomyEncoder in eval mode from a local `{task}_encoder-{sha256}.pth` (or any state dict).

    Errors are one-line TaskonomyErrors naming the file. The sha256 prefix in a published-style name is checked.
    """
    path = Path(path)
    state = _extract_state_dict(path, _read_checkpoint(path))
    encoder = TaskonomyEncoder(normalize_outputs=normalize_outputs)
    _check_names_and_shapes(path, state, encoder)
    encoder.load_state_dict(state, strict=False)  # strictness checked above, minus num_batches_tracked
    encoder.requires_grad_(False)  # frozen: features are extracted once, never fine-tuned here
    return encoder.eval()


def save_taskonomy_checkpoint(encoder: TaskonomyEncoder, folder: str | os.PathLike, task: str) -> Path:
    """Write `{task}_encoder-{sha256[:8]}.pth` in the published format ({'state_dict': ...}); return its path."""
    if not task or any(c in task for c in "/\\") or task.startswith("."):
        raise ValueError(f"task must be a plain name such as 'normal', got {task!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    # Write under a temporary name, then rename: the final name depends on the bytes written.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{task}_encoder-", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch.save({"state_dict": state}, tmp)
        target = folder / f"{task}_encoder-{_sha256(tmp)[:8]}.pth"
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
