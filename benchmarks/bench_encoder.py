"""A ResNet-50-sized pretrained encoder as a source: extraction throughput and cached readouts, in one process.

    .venv/bin/python benchmarks/bench_encoder.py [--images 128] [--size 64] [--input-size 224] [--threads 2]

Builds a standard ResNet-50 trunk (torchvision's layout, written here: no torchvision), random weights, exports
it with torch.export (dynamic batch) to a .pt2 file, and prints with the device:
- the encoder alone: a pure forward on random (B, 3, 224, 224) tensors, images/s;
- extraction end to end through extract.encoders (read the run's images, resize to 224, normalise, encode,
  write float16 layer4 features (2048, 7, 7) to features.zarr), images/s and its ratio to the encoder alone;
- bench_transfer's case (a) with it: one readout trained from its cached features against the same readout
  recomputing the encoder for every batch, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 bottleneck: the stride in the 3x3 conv of a stage's first block."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))
        self.shortcut = nn.Identity() if stride == 1 and in_channels == out else nn.Sequential(
            nn.Conv2d(in_channels, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet50_trunk() -> nn.Module:
    """(B, 3, 224, 224) -> layer4's (B, 2048, 7, 7); 23.5 M parameters, 4.1 GFLOPs per 224 px image."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    in_channels = 64
    for blocks, width, stride in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)):
        for b in range(blocks):
            layers.append(Bottleneck(in_channels, width, stride if b == 0 else 1))
            in_channels = width * 4
    return nn.Sequential(*layers).eval()


def _images_per_s(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128, help="images of the data set (4 views per scene)")
    parser.add_argument("--size", type=int, default=64, help="the run's image size")
    parser.add_argument("--input-size", type=int, default=224, help="the encoder's input size")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2, help="readout epochs of case (a)")
    parser.add_argument("--target", default="normal")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from taskonomy.runtime import cap_threads, describe_device

    threads = cap_threads(args.threads)
    import zarr

    from bench_transfer import _recomputed_encoder
    from taskonomy import tasks as registry
    from taskonomy.config import EncoderConfig, TransferConfig, load_config
    from taskonomy.extract.encoders import encoder_source, load_encoder
    from taskonomy.extract.features import extract_features
    from taskonomy.scenes.dataset import build_data, open_data
    from taskonomy.torchutil import resolve_device
    from taskonomy.transfer.train import ReadoutJob, train_readouts

    device = resolve_device("auto")
    print(f"device: {describe_device(device.type, threads)}")
    tmp = Path(tempfile.mkdtemp())
    try:
        torch.manual_seed(0)
        model = resnet50_trunk()
        n_params = sum(p.numel() for p in model.parameters())
        x = torch.randn(args.batch, 3, args.input_size, args.input_size)
        start = time.perf_counter()
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, str(tmp / "resnet50.pt2"))
        print(f"ResNet-50 trunk, {n_params / 1e6:.1f} M parameters, exported to .pt2 in "
              f"{time.perf_counter() - start:.1f} s ({(tmp / 'resnet50.pt2').stat().st_size / 1e6:.0f} MB)")
        entry = EncoderConfig(kind="export", file=str(tmp / "resnet50.pt2"), input_size=args.input_size)
        encoder, _ = load_encoder("r50", entry, device)

        # the encoder alone: the exported program on random float tensors already at its input size
        x = x.to(device)
        with torch.inference_mode():
            encoder(x)  # warm-up
            n = max(min(args.images, 64) // args.batch, 1) * args.batch
            alone = _images_per_s(lambda: [encoder(x) for _ in range(n // args.batch)], n)
        print(f"encoder alone, {args.input_size} px, batch {args.batch}:   {alone:8.1f} images/s")

        config = load_config(overrides={"name": "bench", "data": {
            "image_size": args.size, "n_scenes": max(args.images // 4, 4), "views_per_scene": 4,
            "tasks": [args.target], "splits": {"test": 0.1, "transfer": 0.9}}})
        build_data(config, tmp / "data.zarr", progress=False)
        data = open_data(tmp / "data.zarr")
        source = encoder_source("r50", entry, device)
        n = sum(data[f"splits/{s}"].shape[0] for s in ("train", "transfer", "test"))
        e2e = _images_per_s(lambda: extract_features(tmp / "features.zarr", data, [source], batch=args.batch,
                                                     progress=False), n)
        print(f"extraction end to end ({args.size} px images -> {args.input_size} px, features {source.shape} "
              f"float16): {e2e:8.1f} images/s, ratio to the encoder alone {e2e / alone:.2f}")

        # (a) one readout from the cached features against recomputing the encoder for every batch
        task = registry.get(args.target)
        root = zarr.open_group(str(tmp / "features.zarr"), mode="r")
        labels = {s: np.asarray(data[f"labels/{task.name}"].get_orthogonal_selection((data[f"splits/{s}"][:],)))
                  for s in ("transfer", "test")}
        cfg = TransferConfig(epochs=args.epochs)
        job = ReadoutJob(task.name, [("r50",)], labels["transfer"], labels["test"], {}, 0)
        train_readouts(root, [job], cfg, args.size)  # warm-up
        _, cached = train_readouts(root, [job], cfg, args.size)
        recomputed = _recomputed_encoder(data, lambda images: encoder.encode(torch.from_numpy(images), device),
                                         source.shape[0], task, cfg, args.size, labels["transfer"], device)
        m = len(labels["transfer"]) * cfg.epochs
        print(f"(a) readout from cached features {m / cached.train_seconds:9.1f} img/s   recomputing the encoder "
              f"{m / recomputed:9.1f} img/s   ratio {recomputed / cached.train_seconds:.1f}x "
              f"({len(labels['transfer'])} transfer images, {cfg.epochs} epochs)")
        # figures on a shared machine are only comparable side by side: say how busy it was
        print(f"load average over the last 1 / 5 / 15 minutes: {' / '.join(f'{v:.1f}' for v in os.getloadavg())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
