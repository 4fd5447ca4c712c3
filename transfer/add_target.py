"""New targets answered from the feature cache alone: no encoder runs, only readouts train.

    taskonomy --config configs/tiny.yaml add-target near_wall --labels near_wall.npy --loss bce

    from taskonomy.transfer.add_target import add_target
    add_target(config, run_dir, "far_half", loss="bce",
               label_fn=lambda data: (data["labels/depth_zbuffer"][:] > 3.0).astype("float32"))

Labels are aligned with data.zarr's image index (one per image, every split). Their shape says the head:
(N,) class indices for `ce`; (N, C) vectors for l1, l2, bce, soft_ce; (N, C, S, S) maps for l1, l2, bce;
(N, S, S) class indices per pixel for `ce_dense`. The target is registered in the task dictionary
(role target: it is never supervised), its labels are kept in the run folder (added_targets/), and its
first-order transfers from every cached source plus the beam of higher orders are appended to
transfers.zarr. There is no `full` (no stage I network) and no `scratch` (it would train an encoder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config, content_hash
from taskonomy.losses import LOSSES
from taskonomy.tasks import Task

__all__ = ["ADDED_FILE", "add_target", "load_added_targets", "read_labels"]

ADDED_FILE = "added_targets.json"


def read_labels(path: str | Path) -> np.ndarray:
    """A label array from a .npy file or a Zarr array (no pickles)."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        return np.asarray(zarr.open_array(str(path), mode="r")[...])
    except FileNotFoundError:
        raise TaskonomyError(f"label file {path} does not exist") from None
    except Exception as err:
        raise TaskonomyError(f"label file {path} is not a .npy file or Zarr array ({type(err).__name__})") from None


def _task_for(name: str, labels: np.ndarray, loss: str, n_images: int, size: int, origin: str) -> Task:
    """The dictionary entry of a new target, checking its labels against the data set and the loss."""
    if loss not in LOSSES:
        raise TaskonomyError(f"unknown loss {loss!r} for {name}; expected one of {', '.join(sorted(LOSSES))}")
    if labels.ndim == 0 or labels.shape[0] != n_images:
        raise TaskonomyError(f"labels of {name} ({origin}) have {labels.shape[0] if labels.ndim else 0} rows; "
                             f"data.zarr has {n_images} images (one label per image, all splits)")
    if labels.dtype.kind not in "biuf":
        raise TaskonomyError(f"labels of {name} ({origin}) have dtype {labels.dtype}; expected numbers")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        bad = int(np.flatnonzero(~np.isfinite(labels.reshape(n_images, -1)).all(axis=1))[0])
        raise TaskonomyError(f"labels of {name} ({origin}) hold NaN or inf (first at image {bad})")
    shape = labels.shape[1:]
    dense = len(shape) >= 2 and shape[-2:] == (size, size)
    if loss in ("ce", "ce_dense"):
        expected = () if loss == "ce" else (size, size)
        if labels.dtype.kind not in "biu" or shape != expected or labels.min() < 0 or labels.max() > 255:
            raise TaskonomyError(f"labels of {name} ({origin}) for {loss} must be class indices 0..255 of shape "
                                 f"(N{', ' + str(size) + ', ' + str(size) if expected else ''}); got "
                                 f"{labels.dtype} {labels.shape}")
        k = int(labels.max()) + 1
        if k < 2:
            raise TaskonomyError(f"labels of {name} ({origin}) hold a single class: nothing to learn")
        return Task(name, "added", "rgb", "dense" if loss == "ce_dense" else "global", 1, loss, origin, "uint8", k,
                    role="target")
    if len(shape) not in (1, 3) or (len(shape) == 3 and not dense):
        raise TaskonomyError(f"labels of {name} ({origin}) for {loss} must be (N, C) vectors or (N, C, {size}, "
                             f"{size}) maps; got {labels.shape}")
    if loss == "bce" and (labels.min() < 0 or labels.max() > 1):
        raise TaskonomyError(f"labels of {name} ({origin}) for bce must lie in [0, 1]")
    if loss == "soft_ce" and (len(shape) != 1 or labels.min() < 0 or not np.allclose(labels.sum(axis=1), 1, atol=1e-3)):
        raise TaskonomyError(f"labels of {name} ({origin}) for soft_ce must be (N, K) distributions summing to 1")
    return Task(name, "added", "rgb", "dense" if dense else "global", shape[0], loss, origin, role="target")


def load_added_targets(run_dir: str | Path) -> list[Task]:
    """Register the targets added to this run folder earlier (every stage calls this first)."""
    path = Path(run_dir) / ADDED_FILE
    if not path.is_file():
        return []
    out = []
    try:
        entries = json.loads(path.read_text())
        tasks = [Task(**{**entry, "aliases": tuple(entry.get("aliases", ()))}) for entry in entries]
    except TaskonomyError as err:
        raise TaskonomyError(f"{path}: {err}") from None
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise TaskonomyError(f"{path} is unreadable ({type(err).__name__}); remove it and add the targets again "
                             f"with `taskonomy add-target`") from None
    for task in tasks:
        registry.register(task, replace=True)
        out.append(task)
    return out


def _save_added(run_dir: Path, task: Task, labels: np.ndarray) -> None:
    folder = run_dir / "added_targets"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{task.name}.npy.tmp"
    with tmp.open("wb") as handle:
        np.save(handle, labels)
    os.replace(tmp, folder / f"{task.name}.npy")
    entries = [e for e in (json.loads((run_dir / ADDED_FILE).read_text()) if (run_dir / ADDED_FILE).is_file() else [])
               if e["name"] != task.name]
    entry = {k: getattr(task, k) for k in ("name", "group", "modality", "head", "channels", "loss", "label",
                                            "label_dtype", "num_classes", "role")}
    tmp = run_dir / f".{ADDED_FILE}.tmp"
    tmp.write_text(json.dumps([*entries, entry], indent=1))
    os.replace(tmp, run_dir / ADDED_FILE)


def add_target(config: Config, run_dir: str | Path, name: str, loss: str, labels: np.ndarray | None = None,
               label_fn: Callable[[zarr.Group], np.ndarray] | None = None, origin: str = "labels",
               force: bool = False, progress: bool = True) -> str:
    """Register `name` from `labels` (or `label_fn(data.zarr)`), train its readouts from the cache, append it."""
    from taskonomy.extract.features import open_features
    from taskonomy.extract.pipeline import source_names
    from taskonomy.scenes.dataset import data_hash, open_data
    from taskonomy.transfer import stage

    run_dir = Path(run_dir)
    registry.validate_name(name)
    load_added_targets(run_dir)
    taken = name in {t.name for t in registry.all_tasks()} or registry.resolve_alias(name) != name
    known = registry.get(name) if taken else None
    if known is not None and not (force and known.group == "added"):
        raise TaskonomyError(f"task name {name!r} is taken by an existing task; choose another name"
                             + (" or pass --force to replace the added target" if known.group == "added" else ""))
    data = open_data(run_dir / "data.zarr", config)
    transfers = stage.open_transfers(run_dir / stage.STORE)
    if transfers.attrs.get("data_hash") != data_hash(data):
        raise TaskonomyError(f"{run_dir / stage.STORE} was made from another data.zarr; run `taskonomy transfer` "
                             f"to redo it before adding targets")
    if labels is None:
        if label_fn is None:
            raise TaskonomyError(f"add-target {name}: give labels or a label function")
        labels, origin = np.asarray(label_fn(data)), "label function"
    labels = np.asarray(labels)
    task = _task_for(name, labels, loss, int(data.attrs["n_images"]), int(data.attrs["image_size"]), origin)
    labels = labels.astype(task.store_dtype)
    sources = source_names(config, list(data.attrs["tasks"]))
    open_features(run_dir / "features.zarr", sources, data_hash(data))  # every source cached, or a one-line error
    registry.register(task, replace=True)
    try:
        outcome = stage.run_added(config, run_dir, task, labels, sources, transfers, progress)
    except BaseException:
        registry.unregister(name)
        raise
    _save_added(run_dir, task, labels)
    return outcome
