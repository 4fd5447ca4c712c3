"""Pretrained encoders of any kind as frozen sources: a config entry becomes a Source of the feature cache.

    extract:
      encoders:
        dino_s16: {kind: export, file: /models/dino_vits16.pt2, sha256: 1a2b3c4d, input_size: 224}
        my_resnet: {kind: torchscript, file: resnet.pt, output: 1, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}

Kinds, first choice first: `export` (a torch.export .pt2 program, the way to bring a timm, torchvision, DINO or
CLIP backbone without their packages), `torchscript` (torch 2.13 deprecates torch.jit: kept for older files),
`visualpriors` (the published Taskonomy encoders, extract/visualpriors.py), `timm` and `torchvision` (a model
name and a local weights file; the optional `.[backbones]` extra, imported only when such an entry is used).
Images go in as [0, 1] RGB resized to `input_size`, minus `mean`, over `std`; the feature map cached is the
output, or `output` (an index or key) of a tuple/dict output, or `layer`'s output (timm, torchvision). Any
channel count and grid is fine (stage II resizes features to the run's grid); a vector or a scalar is refused.
Files are local only, their sha256 prefix checked when the entry gives one; nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import logging
import math
import pickle
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from taskonomy import TaskonomyError
from taskonomy.config import EncoderConfig, content_hash
from taskonomy.extract.features import Source
from taskonomy.extract.visualpriors import _first_line, _sha256, load_taskonomy_encoder

__all__ = ["Encoder", "encoder_source", "load_encoder", "normalise", "resolved_input", "select_feature_map"]

ENCODERS_VERSION = "1"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# (input size, mean, std) of an entry that sets none: visualpriors encoders expect 256 px in [-1, 1]
_DEFAULTS = {"visualpriors": (256, (0.5,) * 3, (0.5,) * 3)}
_BACKBONES_HINT = "install the optional extra: pip install -e '.[backbones]'"
_LOAD_ERRORS = (RuntimeError, EOFError, ValueError, OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError,
                pickle.UnpicklingError, AssertionError, TypeError, AttributeError)


def resolved_input(entry: EncoderConfig) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) of an entry, the kind's defaults filling what it leaves unset."""
    size, mean, std = _DEFAULTS.get(entry.kind, (224, IMAGENET_MEAN, IMAGENET_STD))
    return entry.input_size or size, tuple(entry.mean or mean), tuple(entry.std or std)


def normalise(images_uint8: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) float32: [0, 1] RGB resized (antialiased when shrinking),
    minus `mean`, over `std`."""
    x = images_uint8.float() / 255.0
    if tuple(x.shape[-2:]) != (size, size):
        shrink = x.shape[-2] > size or x.shape[-1] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink).clamp_(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def select_feature_map(output: object, selector: int | str | None, what: str) -> torch.Tensor:
    """The (B, C, h, w) feature map of a model's output: `selector` picks from a tuple/list/dict; (B, L, C)
    tokens of a square grid (after one class token) are laid out as a map; anything else is refused."""
    if isinstance(output, dict):
        if selector is None and len(output) == 1:
            selector = next(iter(output))
        if selector not in output:
            keys = ", ".join(map(str, list(output)[:8]))
            raise TaskonomyError(f"{what} returns a dict ({keys}); choose one with output: KEY (--output KEY)")
        output = output[selector]
    elif isinstance(output, (tuple, list)):
        if selector is None and len(output) == 1:
            selector = 0
        if not isinstance(selector, int) or not -len(output) <= selector < len(output):
            raise TaskonomyError(f"{what} returns {len(output)} outputs; choose one with output: INDEX "
                                 f"(--output N, 0 to {len(output) - 1})")
        output = output[selector]
    elif selector is not None:
        raise TaskonomyError(f"{what} returns one tensor, not a tuple or dict: remove output: {selector}")
    if not isinstance(output, torch.Tensor):
        raise TaskonomyError(f"{what} returns a {type(output).__name__}, not a feature map (B, C, h, w)")
    if output.ndim == 3:  # (B, L, C) tokens of a vision transformer: a square grid, maybe after a class token
        for cls in (0, 1):
            side = math.isqrt(max(output.shape[1] - cls, 0))
            if side and side * side == output.shape[1] - cls:
                return output[:, cls:].transpose(1, 2).reshape(output.shape[0], output.shape[2], side, side)
    if output.ndim != 4 or min(output.shape[1:]) < 1:
        raise TaskonomyError(f"{what} returns a {tuple(output.shape)} tensor, not a feature map (B, C, h, w): "
                             f"export or name a layer that keeps the spatial grid")
    if not output.is_floating_point():
        raise TaskonomyError(f"{what} returns {output.dtype} values, not float features")
    return output


class Encoder:
    """A loaded frozen encoder: normalised (B, 3, S, S) floats in, the selected feature map out; a program with
    a fixed batch size is fed exactly that many images (the last batch padded with zeros)."""

    def __init__(self, what: str, forward: Callable[[torch.Tensor], object], selector: int | str | None,
                 input_size: int, mean, std, fixed_batch: int | None = None) -> None:
        self.what, self.forward, self.selector = what, forward, selector
        self.input_size, self.mean, self.std, self.fixed_batch = input_size, mean, std, fixed_batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is None:
            return select_feature_map(self.forward(x), self.selector, self.what)
        parts, b = [], self.fixed_batch
        for start in range(0, len(x), b):
            piece = x[start:start + b]
            n = len(piece)
            if n < b:
                piece = torch.cat([piece, piece.new_zeros((b - n, *piece.shape[1:]))])
            parts.append(select_feature_map(self.forward(piece), self.selector, self.what)[:n])
        return torch.cat(parts)

    def encode(self, images_uint8: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, 3, H, W) uint8 -> (B, C, h, w) float32 features on the CPU."""
        x = normalise(images_uint8, self.input_size, self.mean, self.std).to(device)
        try:
            with torch.inference_mode():
                return self(x).float().cpu()
        except TaskonomyError:
            raise
        except Exception as error:  # a model's own failure (shape checks, guards): one line naming it
            raise TaskonomyError(f"{self.what} failed on a {tuple(x.shape)} input: {_first_line(error)}") from None


def _checked_file(name: str, entry: EncoderConfig) -> tuple[Path, str]:
    """The entry's file and its sha256, after the file exists and its digest starts with the entry's prefix."""
    path = Path(entry.file).expanduser()
    if not path.is_file():
        raise TaskonomyError(f"encoder {name}: file {entry.file} does not exist (or is not a file)")
    digest = _sha256(path)
    if entry.sha256 and not digest.startswith(entry.sha256):
        raise TaskonomyError(f"encoder {name}: {path.name} has sha256 {digest[:16]}..., not {entry.sha256} as "
                             f"its entry says; the file was replaced or is corrupt")
    return path, digest


def _load_export(path: Path, what: str, size: int) -> tuple[Callable, int | None]:
    """A .pt2 program's module and its fixed batch size (None when the batch is dynamic)."""
    log = logging.getLogger("torch.export")
    level, log.level = log.level, logging.CRITICAL  # it logs a traceback for a broken archive, then falls back
    try:
        program = torch.export.load(str(path))
    except _LOAD_ERRORS as error:
        raise TaskonomyError(f"{what}: {path.name} is not a torch.export program (.pt2): {_first_line(error)}") \
            from None
    finally:
        log.setLevel(level)
    inputs = program.graph_signature.user_inputs
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    if len(inputs) != 1 or not isinstance(values.get(inputs[0]), torch.Tensor):
        raise TaskonomyError(f"{what}: {path.name} takes {len(inputs)} inputs; an encoder takes one image batch")
    shape = values[inputs[0]].shape
    fixed = [d if isinstance(d, int) else None for d in shape]
    if len(shape) != 4 or fixed[1] not in (None, 3):
        raise TaskonomyError(f"{what}: {path.name} takes a {tuple(map(str, shape))} input, not (B, 3, H, W) images")
    if fixed[2:] != [None, None] and fixed[2:] != [size, size]:
        raise TaskonomyError(f"{what}: {path.name} was exported for {fixed[2]}x{fixed[3]} inputs, not {size}x{size}; "
                             f"set its input_size (--input-size) to match")
    return program.module(), fixed[0]


def _load_torchscript(path: Path, what: str) -> Callable:
    with warnings.catch_warnings():
        # torch 2.13 deprecates torch.jit ("Please switch to torch.export"); the file still loads and runs
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except _LOAD_ERRORS as error:
            raise TaskonomyError(f"{what}: {path.name} is not a TorchScript file: {_first_line(error)}") from None
    module.eval()
    return module


def _backbone_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A weights file's tensors: safetensors when so named, else torch.load(weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise TaskonomyError(f"{what}: reading {path.name} needs the safetensors package; {_BACKBONES_HINT}") \
            from None
    except _LOAD_ERRORS as error:
        raise TaskonomyError(f"{what}: {path.name} is not a weights file (read with weights_only): "
                             f"{_first_line(error)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TaskonomyError(f"{what}: {path.name} holds no state dict of tensors")
    return state


def _load_backbone(entry: EncoderConfig, path: Path, what: str) -> tuple[Callable, int | str | None]:
    """A timm or torchvision model built without pretrained weights, then loaded from the local file; returns
    (forward, output selector): a named layer's output through a hook, else timm's features_only maps."""
    try:
        package = importlib.import_module(entry.kind)
    except ImportError:
        raise TaskonomyError(f"{what}: kind {entry.kind!r} needs the {entry.kind} package; {_BACKBONES_HINT}") \
            from None
    except Exception as error:  # a torchvision built for another torch fails to register its operators
        raise TaskonomyError(f"{what}: {entry.kind} does not import beside torch {torch.__version__} "
                             f"({_first_line(error)}); install the pair built for each other") from None
    selector = entry.output
    try:
        if entry.kind == "timm":
            features_only = entry.layer is None
            model = package.create_model(entry.model, pretrained=False, features_only=features_only)
            selector = -1 if features_only and selector is None else selector
        else:
            model = package.models.get_model(entry.model, weights=None)
    except Exception as error:  # unknown names raise RuntimeError, KeyError or ValueError depending on the package
        raise TaskonomyError(f"{what}: no {entry.kind} model {entry.model!r}: {_first_line(error)}") from None
    missing, unexpected = model.load_state_dict(_backbone_state(path, what), strict=False)
    if missing or unexpected:
        raise TaskonomyError(f"{what}: {path.name} does not fit {entry.model}: {len(missing)} missing keys, "
                             f"{len(unexpected)} unexpected (e.g. {', '.join([*missing, *unexpected][:3])})")
    model.eval().requires_grad_(False)
    if entry.layer is None:
        return model, selector
    layers = dict(model.named_modules())
    if entry.layer not in layers:
        raise TaskonomyError(f"{what}: {entry.model} has no layer {entry.layer!r} "
                             f"(e.g. {', '.join(n for n in list(layers)[1:6])})")
    captured: list = []
    layers[entry.layer].register_forward_hook(lambda module, inputs, output: captured.append(output))

    def forward(x: torch.Tensor) -> object:
        captured.clear()
        model(x)
        return captured[-1]

    return forward, selector


def load_encoder(name: str, entry: EncoderConfig, device: torch.device | str = "cpu") -> tuple[Encoder, str]:
    """(the loaded encoder, its file's sha256) of a config entry; every problem is a one-line TaskonomyError."""
    what = f"encoder {name} ({entry.kind})"
    path, digest = _checked_file(name, entry)
    size, mean, std = resolved_input(entry)
    fixed, selector = None, entry.output
    if entry.kind == "export":
        forward, fixed = _load_export(path, what, size)
    elif entry.kind == "torchscript":
        forward = _load_torchscript(path, what)
    elif entry.kind == "visualpriors":
        forward = load_taskonomy_encoder(path)
    else:
        forward, selector = _load_backbone(entry, path, what)
    if isinstance(forward, torch.nn.Module):
        forward = forward.to(device)
    return Encoder(what, forward, selector, size, mean, std, fixed), digest


def encoder_source(name: str, entry: EncoderConfig, device: torch.device | str = "cpu") -> Source:
    """The feature-cache Source of a config entry, probed once on a black image: its stamp changes with the
    file's bytes and every input setting, so a replaced file or a changed entry re-extracts."""
    encoder, digest = load_encoder(name, entry, device)
    probe = encoder.encode(torch.zeros(1, 3, encoder.input_size, encoder.input_size, dtype=torch.uint8), device)
    stamp = content_hash("encoder", ENCODERS_VERSION, digest, entry.model_dump(mode="json", exclude={"file"}),
                         resolved_input(entry))

    def encode(pixels: np.ndarray) -> np.ndarray:
        return encoder.encode(torch.from_numpy(pixels), device).numpy()

    return Source(name, stamp, encode, tuple(probe.shape[1:]))
