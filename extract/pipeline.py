"""Stage I and the feature cache, as the CLI runs them.

    taskonomy --config configs/tiny.yaml train      # one network per source task -> models/, stage1_quality.csv
    taskonomy --config configs/tiny.yaml extract    # every frozen encoder over every split -> features.zarr
    taskonomy --config configs/tiny.yaml train --scheduler tcp://HOST:8786   # the same on a dask cluster

A checkpoint is skipped when its stamp (config, data and code version) matches; features of a source
are kept while its encoder's bytes and the data are unchanged.

On a dask.distributed cluster (`scheduler`, taskonomy.cluster) each network is one job and each source is one
job, on one torch thread as in process, so checkpoints, test losses and features are the same bit for bit on a
CPU. A job opens the run's stores from the folder's location and the config as a dict, never from an object of
this process. A stage I job returns its weights and losses, and this process saves the checkpoint as each
arrives (a few MB; the client keeps the kill-resume behaviour of the local run). A source's job writes its own
features into features.zarr: at the paper's size one source's features are gigabytes (4M images x 8x16x16
float16 = 16 GB), which would pass through the scheduler and sit in this process's memory if returned; sources
write disjoint groups (/<source>/...), zarr creates a missing parent group only if it is absent, and this
process writes the store's root (data hash, `complete` and the inventory) before the jobs and after the last.
A worker killed mid-source leaves that source's finished chunks recorded (`chunks_done`); the job's rerun on
another worker resumes it, to the same bytes. Checkpoints (models/) and encoder files are read by path: the run
folder must be at the same path on every worker (a shared file system); the stores may be under storage.url.
"""

from __future__ import annotations

import csv
import hashlib
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.cluster import run_remote, scheduler_of, wants_gpu
from taskonomy.config import Config, content_hash
from taskonomy.extract.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint, stored_hash
from taskonomy.extract.features import Source, extract_features, extract_source, open_for_sources
from taskonomy.extract.networks import build_network, prepare_images
from taskonomy.extract.stage1 import (baseline_losses, network_cost, quality_row, resolve_device, restore_network,
                                      test_losses, train_task)
from taskonomy.runfolder import RunFolder
from taskonomy.scenes.dataset import data_hash, open_data
from taskonomy.store import mark_complete, open_group
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

    The networks train side by side, one per core on one thread each (taskonomy.workers), or one job each on
    the cluster at `scheduler` (taskonomy.cluster); each checkpoint is saved as soon as its network is done, so
    a run killed midway keeps every finished network.
    """
    data = open_data(RunFolder(run_dir, config.storage).data, config)
    address = scheduler_of(config, "train")
    rows: dict[str, dict] = {}
    todo = []
    for task in trained_tasks(config, list(data.attrs["tasks"])):
        path, stamp = checkpoint_path(run_dir, task), _model_hash(config, data_hash(data), task)
        if not force and stored_hash(path) == stamp:
            rows[task] = {**load_checkpoint(path)["quality"], "status": "up to date"}
        else:
            rows[task] = {}
            todo.append((task, path, stamp))
    device = None if address else resolve_device(config.train.device)  # a worker resolves its own
    workers = 0 if address else job_workers(config.threads, device)

    def save(i: int, outcome) -> None:
        (task, path, stamp), (result, test, baseline) = todo[i], outcome
        row = {**quality_row(task, test, baseline), "best_epoch": result.best_epoch,
               "seconds": round(result.seconds, 2), "images_per_s": round(result.images_per_second, 1)}
        save_checkpoint(path, _payload(stamp, task, result, test, quality=row))
        rows[task] = {**row, "status": "trained"}
        if progress and workers != 1:
            tqdm.write(f"  {task}: {result.seconds:.0f} s, ratio to baseline {row['ratio']:.3f}")

    def cost(item: tuple[str, Path, str]) -> float:
        return network_cost(item[0]) * config.train.epochs_for(item[0])

    desc = "stage I networks" if progress else None
    if address:
        dumped = config.model_dump(mode="json")
        run_remote(address, _remote_train, [(str(run_dir), dumped, task) for task, _, _ in todo],
                   names=[task for task, _, _ in todo], cost=lambda i: cost(todo[i]), done=save,
                   gpu=wants_gpu(config.train.device), desc=desc)
    else:
        run_jobs(lambda item: _stage1_job(item[0], data, config, device, progress and workers == 1), todo, workers,
                 cost=cost, done=save, desc=desc)
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


def _stage1_job(task: str, data, config: Config, device: torch.device, progress: bool):
    """One stage I job: the network of `task` trained, its per-image test losses and its trivial baseline's
    (everything its checkpoint and quality row need): (TrainResult without the module, test, baseline)."""
    result, test = _train_and_test(task, data, config, device, progress)
    return replace(result, network=None), test, baseline_losses(task, data, "test", result.scaler)


def _remote_train(location: str, config: dict[str, Any], task: str):
    """_stage1_job on a dask.distributed worker, from the run folder's location and the config as a dict."""
    config = Config(**config)
    data = open_data(RunFolder(location, config.storage).data, config)
    return _stage1_job(task, data, config, resolve_device(config.train.device), False)


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
    """Fill features.zarr with every source; returns {source: outcome}. With a scheduler, one job per source on
    the cluster, each writing its own source's arrays (see the module docstring)."""
    data = open_data(RunFolder(run_dir, config.storage).data, config)
    names = source_names(config, list(data.attrs["tasks"]))
    address = scheduler_of(config, "extract")
    if address:
        stamp, outcome = data_hash(data), {}
        root = open_for_sources(RunFolder(run_dir, config.storage).features, stamp)
        run_remote(address, _remote_extract, [(str(run_dir), config.model_dump(mode="json"), name, force)
                                              for name in names], names=names,
                   done=lambda i, state: outcome.__setitem__(names[i], state), gpu=wants_gpu(config.train.device),
                   desc="sources" if progress else None)
        mark_complete(root)  # last: every source's group is complete
        return {name: outcome[name] for name in names}
    device = resolve_device(config.train.device)
    sources = build_sources(config, run_dir, names, int(data.attrs["image_size"]), device, data_hash(data))
    return extract_features(RunFolder(run_dir, config.storage).features, data, sources, batch=config.extract.batch,
                            chunk_images=config.extract.chunk_images, force=force, progress=progress)


def _remote_extract(location: str, config: dict[str, Any], name: str, force: bool) -> str:
    """One source's features into the run's features.zarr on a dask.distributed worker; its outcome."""
    config = Config(**config)
    run = RunFolder(location, config.storage)  # the stores in the folder, or under storage.url
    data = open_data(run.data, config)
    names, stamp = source_names(config, list(data.attrs["tasks"])), data_hash(data)
    # `pixels` is pooled to the first source's feature size, as when every source is built in one process
    needed = [names[0], name] if name == "pixels" and names[0] != name else [name]
    source = build_sources(config, run.path, needed, int(data.attrs["image_size"]),
                           resolve_device(config.train.device), stamp)[-1]
    root = open_group(run.features, "r+")
    return extract_source(root, data, source, stamp, batch=config.extract.batch,
                          chunk_images=config.extract.chunk_images, force=force, progress=False)
