"""Stage I and the feature cache, as the CLI runs them.

    taskonomy --config configs/tiny.yaml train      # one network per source task -> models/, stage1_quality.csv
    taskonomy --config configs/tiny.yaml extract    # every frozen encoder over every split -> features.zarr

A checkpoint is skipped when its stamp (config, data and code version) matches; features of a source
are kept while its encoder's bytes and the data are unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config, content_hash
from taskonomy.extract.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint, stored_hash
from taskonomy.extract.features import Source, extract_features
from taskonomy.extract.networks import build_network, prepare_images
from taskonomy.extract.stage1 import (baseline_losses, network_cost, quality_row, resolve_device, restore_network,
                                      test_losses, train_task)
from taskonomy.runfolder import RunFolder
from taskonomy.scenes.dataset import data_hash, open_data
from taskonomy.workers import job_workers, run_jobs

__all__ = ["STAGE1_VERSION", "added_network", "build_sources", "extract_all", "source_names", "train_all"]

STAGE1_VERSION = "2"
CONTROLS = ("random", "pixels")


def trained_tasks(config: Config, data_tasks: list[str]) -> list[str]:
    """The source tasks stage I trains: config train.tasks, or every data task that can be a source."""
    wanted = data_tasks if config.train.tasks == "all" else [registry.get(t).name for t in config.train.tasks]
    missing = [t for t in wanted if t not in data_tasks]
    if missing:
        raise TaskonomyError(f"train.tasks: {', '.join(missing)} not in data.zarr; add them to data.tasks")
    return [t for t in wanted if registry.get(t).is_source]


def source_names(config: Config, data_tasks: list[str]) -> list[str]:
    """Every source of the feature cache: trained tasks, the controls, then loaded pretrained encoders."""
    return [*trained_tasks(config, data_tasks), *CONTROLS, *config.extract.taskonomy_encoders,
            *config.extract.encoders]


def _model_hash(config: Config, data_hash: str, task: str) -> str:
    return content_hash(STAGE1_VERSION, data_hash, config.train.stamp(task), config.seed, task)


def _task_seed(seed: int, task: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(task.encode())) % 2**31


def train_all(config: Config, run_dir: Path, force: bool = False, progress: bool = True) -> list[dict]:
    """Train (or keep) one network per source task; writes the quality table; returns its rows.

    The networks train side by side, one per core on one thread each (taskonomy.workers); each checkpoint is
    saved as soon as its network is done, so a run killed midway keeps every finished network.
    """
    data = open_data(RunFolder(run_dir).data, config)
    device = resolve_device(config.train.device)
    rows: dict[str, dict] = {}
    todo = []
    for task in trained_tasks(config, list(data.attrs["tasks"])):
        path, stamp = checkpoint_path(run_dir, task), _model_hash(config, data_hash(data), task)
        if not force and stored_hash(path) == stamp:
            rows[task] = {**load_checkpoint(path)["quality"], "status": "up to date"}
        else:
            rows[task] = {}
            todo.append((task, path, stamp))
    workers = job_workers(config.threads, device)

    def train(item: tuple[str, Path, str]):
        return _train_and_test(item[0], data, config, device, progress and workers == 1)

    def save(i: int, outcome) -> None:
        (task, path, stamp), (result, test) = todo[i], outcome
        row = {**quality_row(task, test, baseline_losses(task, data, "test", result.scaler)),
               "best_epoch": result.best_epoch, "seconds": round(result.seconds, 2),
               "images_per_s": round(result.images_per_second, 1)}
        save_checkpoint(path, _payload(stamp, task, result, test, quality=row))
        rows[task] = {**row, "status": "trained"}
        if progress and workers > 1:
            tqdm.write(f"  {task}: {result.seconds:.0f} s, ratio to baseline {row['ratio']:.3f}")

    run_jobs(train, todo, workers, cost=lambda item: network_cost(item[0]) * config.train.epochs_for(item[0]),
             done=save, desc="stage I networks" if progress else None)
    _write_quality(RunFolder(run_dir).stage1_quality, list(rows.values()))
    return list(rows.values())


def added_network(config: Config, run_dir: Path, added, labels: np.ndarray, data, device: torch.device,
                  progress: bool = True) -> tuple[dict, int]:
    """The stage I network of a target added from the cache (its `full` row: the same architecture trained on
    the train split with its labels), from its checkpoint when that is up to date, else trained now and saved.
    Returns (checkpoint payload, 1 if trained now else 0)."""
    task, path = added.task, RunFolder(run_dir).checkpoint(added.task.name)
    stamp = content_hash(_model_hash(config, data_hash(data), task.name), added.labels_hash)
    if stored_hash(path) == stamp:
        return load_checkpoint(path), 0
    result, test = _train_and_test(task, data, config, device, progress, labels)
    payload = _payload(stamp, task.name, result, test, best_epoch=result.best_epoch)
    save_checkpoint(path, payload)
    return payload, 1


def _train_and_test(task, data, config: Config, device: torch.device, progress: bool,
                    labels: np.ndarray | None = None):
    """Stage I training of `task` (a name, or the Task of an added target with its `labels`) on the train split,
    and the trained network's per-image test losses: (TrainResult, (n_test,) float64)."""
    name = task if isinstance(task, str) else task.name
    result = train_task(task, data, config.train, _task_seed(config.seed, name), device, progress=progress,
                        labels=labels)
    return result, test_losses(task, result.network, result.scaler, data, "test", device, labels=labels)


def _payload(stamp: str, name: str, result, test: np.ndarray, **extra) -> dict:
    """A stage I checkpoint: weights, label scaler, training curves, per-image test losses, stamp."""
    return {"hash": stamp, "task": name, "state_dict": result.state_dict, "scaler": result.scaler,
            "epoch_losses": result.epoch_losses, "test_losses": torch.from_numpy(test),
            "validation_losses": result.validation_losses, **extra}


def _write_quality(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row if k != "status"))
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _torch_source(name: str, stamp: str, encoder: torch.nn.Module, device: torch.device,
                  size: int, prepare=prepare_images) -> Source:
    encoder = encoder.eval().to(device)

    def encode(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return encoder(prepare(torch.from_numpy(pixels)).to(device)).float().cpu().numpy()

    with torch.inference_mode():
        probe = encoder(prepare(torch.zeros(1, 3, size, size, dtype=torch.uint8)).to(device))
    return Source(name, stamp, encode, tuple(probe.shape[1:]))


def _pixels_source(size: int, feature_hw: tuple[int, int]) -> Source:
    def encode(pixels: np.ndarray) -> np.ndarray:
        images = prepare_images(torch.from_numpy(pixels))
        return torch.nn.functional.adaptive_avg_pool2d(images, feature_hw).numpy()

    return Source("pixels", content_hash("pixels", STAGE1_VERSION, size, feature_hw), encode, (3, *feature_hw))


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_sources(config: Config, run_dir: Path, names: list[str], size: int, device: torch.device,
                  data_stamp: str | None = None) -> list[Source]:
    """The frozen encoders named `names`, each with the hash of what defines it; with `data_stamp` (the data's
    hash), a stage I checkpoint trained for another config, data or code version is refused."""
    from taskonomy.extract.encoders import encoder_source
    from taskonomy.extract.visualpriors import load_taskonomy_encoder, preprocess

    sources, any_rgb_task = [], registry.get("autoencoding")
    for name in names:
        if name == "random":  # the same architecture, untrained, from a fixed seed
            torch.manual_seed(_task_seed(config.seed, "random"))
            encoder = build_network(any_rgb_task, config.train, size).encoder
            settings = config.train.model_dump(mode="json", exclude={"task_epochs"})  # never trained: no epochs
            stamp = content_hash("random", STAGE1_VERSION, settings, config.seed)
            sources.append(_torch_source(name, stamp, encoder, device, size))
        elif name == "pixels":
            hw = sources[0].shape[1:] if sources else (size // 8, size // 8)
            sources.append(_pixels_source(size, hw))
        elif name in config.extract.encoders:
            sources.append(encoder_source(name, config.extract.encoders[name], device))
        elif name in config.extract.taskonomy_encoders:
            path = Path(config.extract.taskonomy_encoders[name])
            resize = config.extract.taskonomy_size
            sources.append(_torch_source(name, content_hash(_file_hash(path), resize), load_taskonomy_encoder(path),
                                         device, size, prepare=lambda x, resize=resize: preprocess(x, resize)))
        else:
            path = checkpoint_path(run_dir, name)
            payload = load_checkpoint(path)
            if data_stamp is not None and payload["hash"] != _model_hash(config, data_stamp, name):
                raise TaskonomyError(f"checkpoint {path} was trained for another config, data or code version; "
                                     f"run `taskonomy train` to retrain it")
            network = restore_network(name, config.train, size, payload["state_dict"])
            sources.append(_torch_source(name, _file_hash(path), network.encoder, device, size))
    return sources


def extract_all(config: Config, run_dir: Path, force: bool = False, progress: bool = True) -> dict[str, str]:
    """Fill features.zarr with every source; returns {source: outcome}."""
    data = open_data(RunFolder(run_dir).data, config)
    device = resolve_device(config.train.device)
    names = source_names(config, list(data.attrs["tasks"]))
    sources = build_sources(config, run_dir, names, int(data.attrs["image_size"]), device, data_hash(data))
    return extract_features(RunFolder(run_dir).features, data, sources, batch=config.extract.batch,
                            chunk_images=config.extract.chunk_images, force=force, progress=progress)
