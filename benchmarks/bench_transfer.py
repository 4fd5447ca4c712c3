"""Stage II throughput, measured side by side in one process.

    .venv/bin/python benchmarks/bench_transfer.py [--scenes 512] [--size 64] [--sources 16] [--threads 2]

Prints, with the device:
(a) readout training images/s from cached features against recomputing the frozen encoder for every
    batch, as the original pipeline did (same readout, same batches): the ratio;
(b) K readouts of one target trained batched (one grouped network, one pass over the data) against the
    same K trained one after another (K passes, one readout each), K = number of sources: the ratio;
(c) the share of wall time the batched training loop waited on feature blocks (Dask, one block ahead).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=512, help="scenes of 4 views (half of them the transfer split)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sources", type=int, default=16, help="K: frozen encoders, i.e. readouts per target")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--target", default="normal")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from taskonomy.runtime import cap_threads, describe_device

    threads = cap_threads(args.threads)
    import torch
    import zarr

    from taskonomy import tasks as registry
    from taskonomy.config import TrainConfig, TransferConfig, load_config
    from taskonomy.extract.features import extract_features
    from taskonomy.extract.networks import build_network
    from taskonomy.extract.pipeline import _torch_source
    from taskonomy.torchutil import resolve_device
    from taskonomy.scenes.dataset import build_data, open_data
    from taskonomy.transfer.train import ReadoutJob, train_readouts

    device = resolve_device("auto")
    print(f"device: {describe_device(device.type, threads)}")
    config = load_config(overrides={"name": "bench", "data": {
        "image_size": args.size, "n_scenes": args.scenes, "views_per_scene": 4, "tasks": [args.target],
        "splits": {"test": 0.1, "transfer": 0.6}}})
    cfg = TransferConfig(epochs=args.epochs)
    tmp = Path(tempfile.mkdtemp())
    try:
        build_data(config, tmp / "data.zarr", progress=False)
        data = open_data(tmp / "data.zarr")
        task = registry.get(args.target)
        encoders = []
        for k in range(args.sources):  # K frozen encoders of the stage I architecture (random weights)
            torch.manual_seed(k)
            encoders.append(build_network(task, TrainConfig(), args.size).encoder.eval().to(device))
        sources = [_torch_source(f"s{k:02d}", f"s{k}", e, device, args.size) for k, e in enumerate(encoders)]
        extract_features(tmp / "features.zarr", data, sources, progress=False)
        root = zarr.open_group(str(tmp / "features.zarr"), mode="r")
        labels = {s: np.asarray(data[f"labels/{task.name}"].get_orthogonal_selection((data[f"splits/{s}"][:],)))
                  for s in ("transfer", "test")}
        n = len(labels["transfer"])

        def job(names: list[str]) -> ReadoutJob:
            return ReadoutJob(task.name, [(s,) for s in names], labels["transfer"], labels["test"], {}, 0)

        names = [s.name for s in sources]
        print(f"target {task.name}, {n} transfer images at {args.size} px, {args.epochs} epochs, K = {len(names)}")

        # (a) one readout: cached features against the encoder recomputed for every batch (training loops only)
        train_readouts(root, [job(names[:1])], cfg, args.size)  # warm-up
        _, cached = train_readouts(root, [job(names[:1])], cfg, args.size)
        from taskonomy.extract.networks import encode_images

        recomputed = _recomputed_encoder(data, lambda images: encode_images(encoders[0], images, device),
                                         encoders[0].feature_channels, task, cfg, args.size, labels["transfer"],
                                         device)
        print(f"(a) readout from cached features {n * cfg.epochs / cached.train_seconds:9.0f} img/s   "
              f"recomputing the encoder {n * cfg.epochs / recomputed:9.0f} img/s   "
              f"ratio {recomputed / cached.train_seconds:.1f}x")

        # (b) K readouts batched against the same K one after another
        _, batched = train_readouts(root, [job(names)], cfg, args.size)
        one_by_one = sum(train_readouts(root, [job([s])], cfg, args.size)[1].train_seconds for s in names)
        print(f"(b) {len(names)} readouts batched {batched.train_seconds:7.2f} s "
              f"({batched.samples / batched.train_seconds:9.0f} readout-img/s)   one after another {one_by_one:7.2f} s"
              f"   ratio {one_by_one / batched.train_seconds:.1f}x")
        mb = sum(root[f"{s}/transfer"].nbytes for s in names) * cfg.epochs / 1e6
        print(f"(c) batched loop waited on data {100 * batched.wait_share:.1f}% of {batched.train_seconds:.2f} s "
              f"({mb / batched.train_seconds:.1f} MB/s of features read)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _recomputed_encoder(data, encode, channels: int, task, cfg, size, labels, device) -> float:
    """Seconds to train one readout when every batch first runs the frozen encoder (`encode`: uint8 images ->
    features) on its images, as the original pipeline did."""
    import torch

    from taskonomy.losses import get_loss
    from taskonomy.transfer.readouts import build_readouts
    from taskonomy.transfer.train import _standardise

    images = np.asarray(data["images/rgb"].get_orthogonal_selection((data["splits/transfer"][:],)))
    readout = build_readouts(task, 1, channels, size // 8, size).to(device)
    optimizer = torch.optim.AdamW(readout.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = get_loss(task.loss)
    y_all = torch.from_numpy(labels.astype(np.float32))
    stats = (np.zeros(channels), np.ones(channels))
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        for rows in torch.from_numpy(np.random.default_rng(epoch).permutation(len(images))).split(cfg.batch):
            with torch.inference_mode():
                z = encode(images[rows.numpy()]).float().cpu().numpy()
            x = _standardise(z, stats, size // 8).to(device).unsqueeze(1)
            loss = loss_fn(readout(x)[:, 0], y_all[rows].to(device)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
