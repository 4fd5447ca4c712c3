"""Generate the data set into data.zarr (layout: scenes/LAYOUT.md).

    taskonomy --config configs/tiny.yaml data

Every image is a pure function of (seed, image index): its room from (seed, scene), its camera and
everything random after it from (seed, image). So any chunk can be made alone, a killed run resumes
at chunk granularity, and a resumed store has the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import Config, DataConfig, content_hash
from taskonomy.scenes.labels import make_inputs, make_labels
from taskonomy.scenes.render import render
from taskonomy.scenes.scene import Buffers, Scene, pair_cameras, sample_camera, sample_scene
from taskonomy.store import (bytes_per_image, chunk_length, create_image_array, locate, mark_complete,
                             open_complete, open_for_writing, open_group, write_state)

__all__ = ["GENERATOR_VERSION", "build_data", "data_hash", "generate_images", "is_imported", "make_splits", "open_data",
           "plan_arrays"]

# 2: colorization labels are chroma bins; 3: the richer world of issue 15 (furniture of several primitives,
# 3..10 pieces a room, columns, room type told by the furniture only, materials independent of room type and
# class, 1..3 lights); 4: edge_occlusion dilated by a 3x3 max (labels.OCCLUSION_DILATE), ~30% of pixels nonzero
# instead of ~14%, so that an L1 readout is not best off predicting 0
GENERATOR_VERSION = "4"
DERIVED_INPUTS = ("gray", "noisy", "masked", "permuted")


def plan_arrays(data: DataConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every per-image array of the store: name -> (shape, dtype)."""
    n, s = data.n_images, data.image_size
    tasks = [registry.get(name) for name in data.task_names()]
    plan = {"images/rgb": ((n, 3, s, s), "uint8")}
    for modality in DERIVED_INPUTS:
        if any(t.modality == modality for t in tasks):
            plan[f"inputs/{modality}"] = ((n, 1 if modality == "gray" else 3, s, s), "uint8")
    for task in tasks:
        if task.head == "pair":
            plan[f"views/{task.name}"] = ((n, 3, s, s), "uint8")
    for task in tasks:
        plan[f"labels/{task.name}"] = ((n, *task.label_shape(s)), task.store_dtype)
    plan["meta/scene"] = ((n,), "int32")
    plan["meta/point"] = ((n,), "int32")
    return plan


def _scene(data: DataConfig, seed: int, index: int) -> Scene:
    return sample_scene(np.random.default_rng([seed, index, 0]), data.max_objects, data.n_lights, data.min_objects,
                        class_materials=data.object_materials == "class", columns=data.columns)


def generate_images(data: DataConfig, seed: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    """All arrays of `plan_arrays` for the images `indices` (a batch rendered in one call)."""
    indices = np.asarray(indices, np.int64)
    size, views_per_scene = data.image_size, data.views_per_scene
    fov = math.radians(data.fov_degrees)
    names = data.task_names()
    cache: dict[int, Scene] = {}
    scenes, cameras, rngs = [], [], []
    for index in indices.tolist():
        if index // views_per_scene not in cache:  # one room per scene, shared by its views
            cache[index // views_per_scene] = _scene(data, seed, index // views_per_scene)
        scene = cache[index // views_per_scene]
        rng = np.random.default_rng([seed, index, 1])
        scenes.append(scene)
        cameras.append(sample_camera(scene, rng, fov))
        rngs.append(rng)
    buffers = render(scenes, cameras, size)

    pair_names = [n for n in names if registry.get(n).head == "pair"]
    views = {}
    if pair_names:
        second = [pair_cameras(sc, cam, buffers.position[b], rngs[b]) for b, (sc, cam) in
                  enumerate(zip(scenes, cameras))]
        # every second view in one call of the ray caster: one parallel region instead of four
        cams = [pair[name] for name in pair_names for pair in second]
        rendered = render(scenes * len(pair_names), cams, size, full=False)
        n = len(scenes)
        for k, name in enumerate(pair_names):
            views[name] = (cams[k * n:(k + 1) * n], Buffers(*(a[k * n:(k + 1) * n] for a in rendered)))
    inputs, jigsaw = make_inputs(buffers.rgb, indices, seed)
    labels = make_labels(names, scenes, cameras, buffers, views, jigsaw)

    out = {"images/rgb": inputs["rgb"]}
    wanted = {registry.get(n).modality for n in names}
    out.update({f"inputs/{m}": inputs[m] for m in DERIVED_INPUTS if m in wanted})
    out.update({f"views/{n}": _to_uint8_chw(views[n][1].rgb) for n in pair_names})
    out.update({f"labels/{n}": labels[n] for n in names})
    out["meta/scene"] = (indices // views_per_scene).astype(np.int32)
    out["meta/point"] = (indices % views_per_scene).astype(np.int32)
    return out


def _to_uint8_chw(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))


def make_splits(data: DataConfig, seed: int) -> dict[str, np.ndarray]:
    """train / transfer / test image indices, split by scene; transfer is a subset of train."""
    order = np.random.default_rng([seed, 0, 2]).permutation(data.n_scenes)
    n_test = max(1, round(data.splits.test * data.n_scenes))
    test, train = order[:n_test], order[n_test:]
    n_transfer = max(1, round(data.splits.transfer * len(train)))
    transfer = train[:n_transfer]
    if len(train) == 0:
        raise TaskonomyError(f"data.splits.test={data.splits.test} leaves no training scene out of {data.n_scenes}")

    def images(scene_ids: np.ndarray) -> np.ndarray:
        v = data.views_per_scene
        return np.sort((scene_ids[:, None] * v + np.arange(v)[None, :]).ravel()).astype(np.int64)

    return {"train": images(train), "transfer": images(transfer), "test": images(test)}


def _attrs(config: Config) -> dict[str, Any]:
    data = config.data
    return {
        "generator_version": GENERATOR_VERSION, "seed": config.seed,
        "config_hash": content_hash(GENERATOR_VERSION, config.seed, data.model_dump(mode="json")),
        "image_size": data.image_size, "n_images": data.n_images, "n_scenes": data.n_scenes,
        "views_per_scene": data.views_per_scene, "fov_degrees": data.fov_degrees, "tasks": data.task_names(),
        "room_types": list(registry.ROOM_TYPES), "object_classes": list(registry.OBJECT_CLASSES),
    }


def _existing(path: Path, attrs: dict[str, Any], force: bool) -> str:
    """'fresh', 'resume' or 'done' for the store at `path`; refuses a store made from another config."""
    def other(old: dict[str, Any]) -> str | None:
        if old.get("config_hash") == attrs["config_hash"]:
            return None
        return (f"was made from another config or generator version (hash {old.get('config_hash')} != "
                f"{attrs['config_hash']}); pass --force to rebuild it")

    return write_state(path, force, other)


def build_data(config: Config, path: str | Path, force: bool = False, progress: bool = True) -> str:
    """Make data.zarr at `path`: 'built', 'resumed', or 'up to date' when it already matches the config."""
    path, data = locate(path, config.storage), config.data  # a folder, or a StoreURL under storage.url
    attrs = _attrs(config)
    splits = make_splits(data, config.seed)  # an empty split is refused before anything is written
    state = _existing(path, attrs, force)
    if state == "done":
        return "up to date"
    plan = plan_arrays(data)
    chunk = data.chunk_images if data.chunk_images != "auto" else chunk_length(
        max(bytes_per_image(shape, dtype) for shape, dtype in plan.values()), data.n_images)
    if state == "resume":
        group = open_group(path, "r+")
        if group.attrs.get("chunk_images") != chunk or not all(k in group and group[k].shape == s
                                                                for k, (s, _) in plan.items()):
            state = "fresh"  # the layout is not the one this config makes: start over
    if state == "fresh":
        group = open_for_writing(path, {**attrs, "chunk_images": chunk, "chunks_done": []})
        for name, (shape, dtype) in plan.items():
            create_image_array(group, name, shape, dtype, chunk)

    done = set(group.attrs.get("chunks_done", []))
    todo = [c for c in range(math.ceil(data.n_images / chunk)) if c not in done]
    remaining = sum(hi - lo for lo, hi in (_chunk_range(c, chunk, data.n_images) for c in todo))
    bar = tqdm(total=data.n_images, initial=data.n_images - remaining, unit="img", desc="data", disable=not progress)
    _generate_chunks(config, group, todo, chunk, bar.update)
    bar.close()
    for name, indices in splits.items():
        create_image_array(group, f"splits/{name}", indices.shape, "int64", max(1, len(indices)))[:] = indices
    del group.attrs["chunks_done"]
    mark_complete(group)
    return "resumed" if state == "resume" else "built"


def _chunk_range(c: int, chunk: int, n: int) -> tuple[int, int]:
    return c * chunk, min(n, (c + 1) * chunk)


def _generate_chunks(config: Config, group: zarr.Group, todo: list[int], chunk: int,
                     advance: Callable[[int], None]) -> None:
    """Render chunk c+1 while chunk c is compressed and written on a writer thread."""
    data = config.data
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1) as writer:
        for c in todo:
            lo, hi = _chunk_range(c, chunk, data.n_images)
            parts = []
            for start in range(lo, hi, data.batch):
                parts.append(generate_images(data, config.seed, np.arange(start, min(hi, start + data.batch))))
                advance(min(hi, start + data.batch) - start)
            block = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            if pending is not None:
                pending.result()
            pending = writer.submit(_write_chunk, group, c, lo, hi, block)
        if pending is not None:
            pending.result()


def _write_chunk(group: zarr.Group, c: int, lo: int, hi: int, block: dict[str, np.ndarray]) -> None:
    for name, values in block.items():
        group[name][lo:hi] = values
    # recorded only after every array of the chunk is on disk: a kill before this line redoes the chunk
    group.attrs["chunks_done"] = sorted({*group.attrs.get("chunks_done", []), c})


def open_data(path: str | Path, config: Config | None = None) -> zarr.Group:
    """data.zarr, read-only, refusing an incomplete or unreadable store, or one generated from another config."""
    data = open_complete(path, "taskonomy data")
    if config is not None and "config_hash" in data.attrs:  # an imported store has none: the config made nothing
        expected = _attrs(config)["config_hash"]
        if data.attrs["config_hash"] != expected:
            raise TaskonomyError(f"{path} was made from another config or generator version (hash "
                                 f"{data.attrs['config_hash']} != {expected}); run `taskonomy data --force` to "
                                 f"rebuild it for this config")
    for split in ("train", "transfer", "test") if config is not None else ():  # the stages need every split
        if f"splits/{split}" not in data or data[f"splits/{split}"].shape[0] == 0:
            raise TaskonomyError(f"{path} has no {split} images (array splits/{split} is missing or empty); the "
                                 f"stages need train, transfer and test images")
    return data


def is_imported(path: str | Path) -> bool:
    """True when `path` holds a complete store imported by `data --from-taskonomy` or `--from-arrays`: `data`
    without them (as `taskonomy run` calls it) keeps it rather than refusing it for its missing config hash."""
    try:
        attrs = open_group(path, "r").attrs
    except Exception:
        return False
    return bool(attrs.get("complete")) and "import_key" in attrs


def data_hash(data: zarr.Group) -> str:
    """What identifies a data.zarr to later stages: its config hash, or for imported data the hash of its content
    (scenes/_import.py; stores imported before content hashes: the folder they came from)."""
    attrs = data.attrs
    return str(attrs.get("config_hash", attrs.get("content_hash", attrs.get("imported_from", ""))))
