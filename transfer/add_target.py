"""New targets answered from the feature cache alone: no encoder runs, only readouts train.

    taskonomy --config configs/tiny.yaml add-target near_wall --labels near_wall.npy --loss bce

    from taskonomy.transfer.add_target import add_target
    add_target(config, run_dir, "far_half", loss="bce",
               label_fn=lambda data: (data["labels/depth_zbuffer"][:] > 3.0).astype("float32"))

Labels are aligned with data.zarr's image index (one per image, every split). Their shape says the head:
(N,) class indices for `ce`; (N, C) vectors for l1, l2, bce, soft_ce; (N, C, S, S) maps for l1, l2, bce;
(N, S, S) class indices per pixel for `ce_dense`. The target's dictionary entry (role target: it is never
supervised) and its labels are kept in the run folder (added_targets.json, added_targets/), never in a
process-wide registry, so they travel with every later stage and with a job sent to a dask.distributed
worker. It gets every row the other targets have: `full` (the stage I architecture trained on the train
split with these labels, models/<name>.pt), `scratch` (trained on the transfer split), its first-order
transfers from every cached source (readouts trained on the transfer split less its validation scenes) and
the beam of higher orders, ranked on the labels of those validation scenes, never on the test images.
Later `transfer`, `run` and `--force` keep or retrain its rows by their stamps, as for every target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.artifacts import AddedTarget, labels_hash, read_added_targets, remove_added_target, write_added_target
from taskonomy.config import Config
from taskonomy.losses import LOSSES
from taskonomy.runfolder import REBUILD, RunFolder
from taskonomy.tasks import Task
from taskonomy.transfer.stage import TransferOutcome

__all__ = ["add_target", "read_labels"]


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


def add_target(config: Config, run_dir: str | Path, name: str, loss: str, labels: np.ndarray | None = None,
               label_fn: Callable[[zarr.Group], np.ndarray] | None = None, origin: str = "labels",
               force: bool = False, progress: bool = True) -> TransferOutcome:
    """Add `name` from `labels` (or `label_fn(data.zarr)`) to a finished run: its network, scratch and readouts
    train from the cache and data.zarr, no encoder runs. The same labels again only finish what is missing."""
    from taskonomy.extract.features import open_features
    from taskonomy.extract.pipeline import source_names
    from taskonomy.scenes.dataset import data_hash, open_data
    from taskonomy.store import open_complete, open_group
    from taskonomy.transfer.stage import run_transfer

    run = RunFolder(run_dir, config.storage)  # the stores in the folder or under storage.url
    registry.validate_name(name)
    added = {a.task.name: a for a in read_added_targets(run.path)}
    if name not in added and (name in {t.name for t in registry.all_tasks()} or registry.resolve_alias(name) != name):
        raise TaskonomyError(f"task name {name!r} is taken by a task of the dictionary; choose another name")
    data = open_data(run.data, config)
    data_id = data_hash(data)
    if name in added and run.transfers.is_dir():  # the same target again: finish what a killed add-target left
        transfers = open_group(run.transfers, "r")
    else:
        transfers = open_complete(run.transfers, REBUILD["transfers"])
    if transfers.attrs.get("data_hash") != data_id:
        raise TaskonomyError(f"{run.transfers} was made from another data.zarr; run `taskonomy transfer` "
                             f"to redo it before adding targets")
    if labels is None:
        if label_fn is None:
            raise TaskonomyError(f"add-target {name}: give labels or a label function")
        labels, origin = np.asarray(label_fn(data)), "label function"
    labels = np.asarray(labels)
    task = _task_for(name, labels, loss, int(data.attrs["n_images"]), int(data.attrs["image_size"]), origin)
    labels = labels.astype(task.store_dtype)
    entry = AddedTarget(task, labels_hash(labels), data_id, origin)
    known = added.get(name)
    if known is not None and (known.labels_hash, known.task.loss) != (entry.labels_hash, loss) and not force:
        raise TaskonomyError(f"target {name} was added already with other labels or loss; pass --force to "
                             f"replace it")
    open_features(run.features, source_names(config, list(data.attrs["tasks"])), data_id)  # or a one-line error
    write_added_target(run.path, entry, labels)
    try:
        return run_transfer(config, run.path, progress=progress, only=[name])
    except TaskonomyError:
        if known is None:  # refused before any of its rows were written: as if never added
            remove_added_target(run.path, name)
        raise
