"""The data contact sheet (scenes/preview.py) on a small synthetic data.zarr written as LAYOUT.md describes."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from PIL import Image

from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.scenes.preview import CELL_PX, contact_sheet

SIZE, N = 16, 8


def _label(task: registry.Task, rng: np.random.Generator, rgb: np.ndarray, sem: np.ndarray) -> np.ndarray:
    """A plausible label of `task` for one image (C, S, S) rgb in [0, 1] with semantic map `sem`."""
    ramp = np.linspace(1.0, 6.0, SIZE, dtype=np.float32)[:, None] * np.ones((1, SIZE), np.float32)
    if task.name == "segment_semantic":
        return sem
    if task.name == "colorization":  # chroma bins, varying across the image
        return rng.integers(task.num_classes, size=(SIZE, SIZE)).astype(np.uint8)
    if task.name in ("class_scene", "jigsaw"):
        return np.uint8(rng.integers(task.num_classes))
    if task.name == "class_object":
        p = rng.dirichlet(np.ones(task.channels)).astype(np.float32)
        return p
    if task.name == "room_layout":  # a 4 x 4 x 2.6 m room around a camera 1.5 m from its centre
        return np.array([0.1, 0.3, 0.0, 0.3, 0.4, 1.5, 2.0, 1.3, 2.0], np.float32)
    if task.name == "vanishing_point":
        return np.eye(3, dtype=np.float32).ravel() * 0.9 + rng.normal(0, 0.05, 9).astype(np.float32)
    if task.name == "point_matching":
        return np.array([rng.integers(2)], np.float32)
    if task.head == "pair":
        return rng.normal(0, 0.2, task.channels).astype(np.float32)
    if task.name in ("normal", "segment_unsup25d"):
        n = np.stack([np.where(sem > 1, 0.0, -0.6), np.full(sem.shape, 0.3), np.full(sem.shape, -0.7)])
        extra = [ramp] if task.channels == 4 else []
        return np.concatenate([n, *[e[None] for e in extra]]).astype(np.float16)
    if task.channels == 2:
        return rng.normal(0, 0.1, (2, SIZE, SIZE)).astype(np.float16)
    if task.channels == 3:
        return rgb.astype(np.float16)
    return np.stack([ramp * (1 + (sem > 1))] * task.channels).astype(np.float16)


def _write_store(path, names: list[str], complete: bool = True) -> None:
    rng = np.random.default_rng(0)
    g = zarr.open_group(str(path), mode="w")
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    rgbs, sems = [], []
    for i in range(N):
        sem = np.ones((SIZE, SIZE), np.uint8)
        a, b = rng.integers(2, SIZE // 2, 2)
        sem[a:a + 6, b:b + 6] = 2 + i % len(registry.OBJECT_CLASSES)
        rgb = np.stack([xx, yy, 0.5 + 0.0 * xx]) * (1 - 0.5 * (sem > 1))
        rgbs.append(rgb.astype(np.float32))
        sems.append(sem)
    rgb = np.stack(rgbs)
    g.create_array("images/rgb", data=(rgb * 255).astype(np.uint8), chunks=(4, 3, SIZE, SIZE))
    g.create_array("inputs/gray", data=(rgb.mean(axis=1, keepdims=True) * 255).astype(np.uint8))
    for name in ("noisy", "masked", "permuted"):
        noisy = np.clip(rgb * 255 + rng.normal(0, 20, rgb.shape), 0, 255)
        g.create_array(f"inputs/{name}", data=noisy.astype(np.uint8))
    for name in names:
        task = registry.get(name)
        data = np.stack([_label(task, rng, rgbs[i], sems[i]) for i in range(N)]).astype(task.store_dtype)
        assert data.shape == (N, *task.label_shape(SIZE))
        g.create_array(f"labels/{name}", data=data, chunks=(4, *data.shape[1:]))
        if task.head == "pair":
            g.create_array(f"views/{name}", data=np.roll(g["images/rgb"][:], 3, axis=-1))
    g.create_array("meta/scene", data=np.arange(N, dtype=np.int32) // 2)
    g.create_array("meta/point", data=np.arange(N, dtype=np.int32) % 2)
    for split, idx in (("train", [0, 1, 2, 3]), ("transfer", [4, 5]), ("test", [6, 7])):
        g.create_array(f"splits/{split}", data=np.array(idx, np.int64))
    g.attrs.update({"image_size": SIZE, "n_images": N, "tasks": names, "fov_degrees": 70.0, "seed": 0,
                    "room_types": list(registry.ROOM_TYPES), "object_classes": list(registry.OBJECT_CLASSES)})
    if complete:
        g.attrs["complete"] = True


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32)


def test_sheet_of_every_target_task(tmp_path):
    import matplotlib.pyplot as plt

    names = [t.name for t in registry.all_tasks() if t.head != "none"]
    _write_store(tmp_path / "data.zarr", names)
    figures = plt.get_fignums()
    out = contact_sheet(tmp_path / "data.zarr", tmp_path / "sheet.png", n_rows=3)
    assert out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["data.zarr", "sheet.png"]
    assert plt.get_fignums() == figures  # no pyplot state left behind
    img = _png(out)
    h, w = img.shape[:2]
    # several bands of up to a dozen columns, each band with 3 rows of CELL_PX cells
    assert 8 * CELL_PX < w < 16 * CELL_PX
    assert 3 * 3 * CELL_PX < h < 4 * 5 * CELL_PX
    assert img.std() > 20


def test_sheet_rows_and_columns(tmp_path):
    names = ["depth_zbuffer", "segment_semantic", "class_scene"]
    _write_store(tmp_path / "data.zarr", names)
    two = _png(contact_sheet(tmp_path / "data.zarr", tmp_path / "a.png", images=[0, 5]))
    four = _png(contact_sheet(tmp_path / "data.zarr", tmp_path / "b.png", images=[0, 1, 2, 3]))
    assert two.shape[1] == four.shape[1]
    assert 4 * CELL_PX < two.shape[1] < 6 * CELL_PX  # rgb + 3 tasks, one band
    assert abs((four.shape[0] - two.shape[0]) - 2 * CELL_PX) < 0.2 * 2 * CELL_PX
    cells = four[100:-60, 100:]  # below the title and headers, right of the row labels
    assert cells.std() > 20


def test_default_rows_prefer_distinct_scenes(tmp_path):
    _write_store(tmp_path / "data.zarr", ["normal"])
    out = contact_sheet(tmp_path / "data.zarr", tmp_path / "sheet.png")  # test split: 2 images, 1 scene
    assert _png(out).std() > 10


def test_incomplete_or_missing_store_is_refused(tmp_path):
    _write_store(tmp_path / "data.zarr", ["depth_zbuffer"], complete=False)
    with pytest.raises(TaskonomyError, match="data.zarr"):
        contact_sheet(tmp_path / "data.zarr", tmp_path / "sheet.png")
    with pytest.raises(TaskonomyError, match="missing.zarr"):
        contact_sheet(tmp_path / "missing.zarr", tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_bad_image_indices_are_refused(tmp_path):
    _write_store(tmp_path / "data.zarr", ["depth_zbuffer"])
    with pytest.raises(TaskonomyError, match="images"):
        contact_sheet(tmp_path / "data.zarr", tmp_path / "sheet.png", images=[0, N])
