"""Data in no Taskonomy layout: images and per-task labels as .npy files or Zarr arrays, into data.zarr.

    taskonomy data --from-arrays images.npy --labels depth_zbuffer=depth.npy --labels class_scene=rooms.npy \\
        --building-ids buildings.npy

images: (N, H, W, 3) uint8, or float in [0, 1]; labels: (N, *shape) as the task dictionary says at the images'
H (dense: (C, H, W), class maps (H, W); global: (C,) or () for class ids); building ids: (N,) integers or
strings, one per image, for the splits by building. Every array is checked (shape, dtype, NaN/inf, class range)
one chunk at a time before anything is written, then written as the folder import is (scenes/_import.py).
Arrays are opened memory-mapped (.npy) or lazily (Zarr): memory stays at two chunks of every array.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import content_hash
from taskonomy.scenes._import import (ImportPlan, building_splits, derived_arrays, resize_image, resize_label,
                                      round_robin, write_import)

__all__ = ["open_array", "plan_arrays_import", "read_arrays"]


def open_array(path: str | Path, what: str) -> Any:
    """A .npy file (memory-mapped) or a Zarr array (lazy); object arrays and pickles refused."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as file:
                if file.read(6) != b"\x93NUMPY":  # else np.load takes it for a pickle
                    raise ValueError("no .npy header")
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            array = zarr.open_array(str(path), mode="r")
    except FileNotFoundError:
        raise TaskonomyError(f"{what} {path} does not exist") from None
    except ValueError as err:
        if "allow_pickle" in str(err) or "Python objects" in str(err):
            raise TaskonomyError(f"{what} {path} holds Python objects (refused: allow_pickle=False)") from None
        raise TaskonomyError(f"{what} {path} is not a .npy file or Zarr array ({err})") from None
    except Exception as err:
        raise TaskonomyError(f"{what} {path} is not a .npy file or Zarr array ({type(err).__name__})") from None
    if np.dtype(array.dtype).kind == "O":
        raise TaskonomyError(f"{what} {path} holds Python objects; expected numbers")
    return array


def read_arrays(images: str | Path, labels: dict[str, str | Path], building_ids: str | Path, out_path: str | Path,
                size: int, buildings: list[str] | None = None, limit: int | None = None,
                splits: tuple[float, float] = (0.25, 0.25), chunk_images: int | None = None, force: bool = False,
                progress: bool = True) -> str:
    """Import arrays into data.zarr at `out_path`, streamed: 'imported', 'resumed' or 'up to date'."""
    plan, read = plan_arrays_import(images, labels, building_ids, size, buildings, limit, splits, chunk_images)
    return write_import(out_path, plan, read, force=force, progress=progress, desc="import")


def plan_arrays_import(images: str | Path, labels: dict[str, str | Path], building_ids: str | Path, size: int,
                       buildings: list[str] | None = None, limit: int | None = None,
                       splits: tuple[float, float] = (0.25, 0.25),
                       chunk_images: int | None = None) -> tuple[ImportPlan, Any]:
    """The plan of an arrays import and its block reader, every array checked; nothing written."""
    rgb = open_array(images, "images")
    if rgb.ndim != 4 or rgb.shape[3] != 3 or rgb.shape[1] != rgb.shape[2] or np.dtype(rgb.dtype) != np.uint8 \
            and np.dtype(rgb.dtype).kind != "f":
        raise TaskonomyError(f"images {images}: expected (N, H, H, 3) uint8 or float in [0, 1], got {rgb.dtype} "
                             f"{tuple(rgb.shape)}")
    n, h = int(rgb.shape[0]), int(rgb.shape[1])
    ids = np.asarray(open_array(building_ids, "building ids")[...])
    if ids.shape != (n,) or ids.dtype.kind not in "iuU":
        raise TaskonomyError(f"building ids {building_ids}: expected ({n},) integers or strings, one per image; got "
                             f"{ids.dtype} {ids.shape}")
    paths, arrays = _open_labels(labels, n, h)

    names = [str(b) for b in ids.tolist()]
    chosen = _select(names, buildings, limit)
    picked = [names[i] for i in chosen]
    split = building_splits(picked, *splits)
    plan_arrays: dict[str, tuple[tuple[int, ...], str]] = {"images/rgb": ((len(chosen), 3, size, size), "uint8")}
    plan_arrays.update({name: ((len(chosen), *t.label_shape(size)), t.store_dtype) for name, (_, t) in arrays.items()})
    plan_arrays.update(derived_arrays([t for _, t in arrays.values()], len(chosen), size))
    plan_arrays.update({"meta/scene": ((len(chosen),), "int32"), "meta/point": ((len(chosen),), "int32")})
    listed, scene, point = _scene_and_point(ids, chosen, picked)
    sources = {"images": str(Path(images).resolve()), "building_ids": str(Path(building_ids).resolve()),
               "labels": {t: str(p.resolve()) for t, p in paths.items()}}
    attrs: dict[str, Any] = {"image_size": size, "n_images": len(chosen), "tasks": list(paths),
                             "imported_from": sources}
    if listed is not None:
        attrs["buildings"] = listed  # meta/scene indexes this list
    stamps = {p: _stamp(p) for p in [sources["images"], sources["building_ids"], *sources["labels"].values()]}
    key = content_hash("arrays", attrs, stamps, chosen.tolist())
    plan = ImportPlan(plan_arrays, split, attrs, key, chunk_images)

    def read(lo: int, hi: int, pool: ThreadPoolExecutor | None = None) -> dict[str, np.ndarray]:
        index = chosen[lo:hi]
        block = {"images/rgb": _images(_take(rgb, index), size, pool)}
        for name, (array, task) in arrays.items():
            block[name] = _labels(_take(array, index), task, size)
        block["meta/scene"], block["meta/point"] = scene[lo:hi], point[lo:hi]
        return block

    _check_values(plan, rgb, arrays, chosen, paths)
    return plan, read


def _open_labels(labels: dict[str, str | Path], n: int, h: int) -> tuple[dict[str, Path], dict[str, tuple]]:
    """task -> its label file, and array name -> (the opened array, its task), each checked for shape and dtype."""
    paths: dict[str, Path] = {}  # task -> its label file
    for name, path in labels.items():
        task = _checked_task(name, path)
        if task.name in paths:
            raise TaskonomyError(f"task {task.name}: labels given twice ({paths[task.name]} and {path})")
        paths[task.name] = Path(path)
    arrays = {f"labels/{t}": (open_array(p, f"labels of {t}"), registry.get(t)) for t, p in paths.items()}
    for array, task in arrays.values():
        expected = (n, *task.label_shape(h if task.head == "dense" else 0))
        where = f"labels of {task.name} {paths[task.name]}"
        if tuple(array.shape) != expected:
            raise TaskonomyError(f"{where}: shape {tuple(array.shape)}, expected {expected} (N images, then the "
                                 f"task's label shape at {h} px)")
        kinds = "iu" if task.label_dtype == "uint8" else "biuf"
        if np.dtype(array.dtype).kind not in kinds:
            raise TaskonomyError(f"{where}: dtype {array.dtype}, expected "
                                 f"{'integer class ids' if kinds == 'iu' else 'numbers'}")
    return paths, arrays


def _checked_task(name: str, path: Any) -> registry.Task:
    task = registry.get(name)  # an unknown name: one line listing the known ones
    if task.head in ("pair", "none"):
        raise TaskonomyError(f"task {task.name} ({path}) needs {'second views' if task.head == 'pair' else 'no labels'}"
                             f"; --from-arrays takes single images with dense or global labels")
    if task.modality == "permuted":
        raise TaskonomyError(f"task {task.name} ({path}): its labels are the permutations of an input the import "
                             f"makes; --from-arrays takes no jigsaw labels")
    return task


def _scene_and_point(ids: np.ndarray, chosen: np.ndarray, picked: list[str]) -> tuple[list[str] | None, np.ndarray,
                                                                                       np.ndarray]:
    """meta/scene (the ids when they are int32 numbers, else the index in the sorted names, which are returned) and
    meta/point (each image's place within its building)."""
    ordered = sorted(set(picked))
    numbered = ids.dtype.kind in "iu" and ids.min() >= 0 and ids.max() < 2**31
    scene = ids[chosen].astype(np.int32) if numbered else \
        np.searchsorted(np.array(ordered), np.array(picked)).astype(np.int32)
    point, counts = np.empty(len(picked), np.int32), dict.fromkeys(ordered, 0)
    for i, b in enumerate(picked):
        point[i], counts[b] = counts[b], counts[b] + 1
    return (None if numbered else ordered), scene, point


def _select(names: list[str], buildings: list[str] | None, limit: int | None) -> np.ndarray:
    """The chosen image indices: those of `buildings` (all when None), at most `limit` taken building by building."""
    groups: dict[str, list[int]] = {}
    for i, b in enumerate(names):
        groups.setdefault(b, []).append(i)
    if buildings is not None:
        missing = [b for b in buildings if b not in groups]
        if missing:
            raise TaskonomyError(f"no building {missing[0]} among the building ids (they have {len(groups)}: "
                                 f"{', '.join(sorted(groups)[:5])}{', ...' if len(groups) > 5 else ''})")
        groups = {b: groups[b] for b in buildings}
    return np.array(round_robin(list(groups.values()), limit), np.int64)


def _stamp(path: str) -> list[int]:
    """Size and modification time of a file (a Zarr array: of its metadata): a changed source is not resumed."""
    p = Path(path)
    p = p / "zarr.json" if p.is_dir() else p
    stat = p.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _take(array: Any, index: np.ndarray) -> np.ndarray:
    """array[index] along the first axis, as one slice when the indices are consecutive."""
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return np.asarray(array[int(index[0]):int(index[-1]) + 1])
    return np.asarray(array.oindex[index] if isinstance(array, zarr.Array) else array[index])


def _images(x: np.ndarray, size: int, pool: ThreadPoolExecutor | None) -> np.ndarray:
    """(B, H, H, 3) uint8 or [0, 1] floats -> (B, 3, S, S) uint8."""
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    resized = list(pool.map(lambda im: resize_image(im, size), x)) if pool else [resize_image(im, size) for im in x]
    return np.stack(resized).transpose(0, 3, 1, 2)


def _labels(x: np.ndarray, task: registry.Task, size: int) -> np.ndarray:
    if task.head == "dense" and x.shape[-1] != size:
        classes = task.label_dtype == "uint8"
        x = np.stack([resize_label(v.astype(np.uint8) if classes else v, size, classes) for v in x])
    return x.astype(task.store_dtype)


def _check_values(plan: ImportPlan, rgb: Any, arrays: dict[str, tuple[Any, registry.Task]], chosen: np.ndarray,
                  paths: dict[str, Path]) -> None:
    """NaN/inf, images outside [0, 1], class ids outside the task's classes: one chunk at a time."""
    step = plan.chunk
    for lo in range(0, len(chosen), step):
        index = chosen[lo:lo + step]
        x = _take(rgb, index)
        if x.dtype != np.uint8 and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise TaskonomyError(f"images: float images must lie in [0, 1] (images {index[0]}..{index[-1]} do not)")
        for array, task in arrays.values():
            y = _take(array, index)
            where = f"labels of {task.name} {paths[task.name]}"
            if y.dtype.kind == "f" and not np.isfinite(y).all():
                bad = int(index[np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))[0]])
                raise TaskonomyError(f"{where}: NaN or inf (first at image {bad})")
            top = task.num_classes if task.num_classes else 256
            if task.label_dtype == "uint8" and (y.min() < 0 or y.max() >= top):
                raise TaskonomyError(f"{where}: class ids must lie in 0..{top - 1}; found {y.min()}..{y.max()}")
