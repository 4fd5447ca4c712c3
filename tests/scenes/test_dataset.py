"""data.zarr: layout, splits, determinism, resume after a kill, refusal of a store from another config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from _faults import store_bytes
from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.config import load_config
from taskonomy.scenes import dataset
from taskonomy.scenes.dataset import build_data, generate_images, open_data, plan_arrays


def small_config(tmp_path: Path, **data):
    text = json.dumps({"name": "small", "seed": 3, "data": {
        "image_size": 16, "n_scenes": 6, "views_per_scene": 3, "chunk_images": 4, "batch": 4,
        "tasks": ["depth_zbuffer", "jigsaw", "class_scene", "egomotion"], **data}})
    (tmp_path / "small.yaml").write_text(text)  # JSON is YAML
    return load_config(tmp_path / "small.yaml")


def test_tiny_store_is_complete_with_every_planned_array(tiny_data, tiny_config):
    group = open_data(tiny_data)
    plan = plan_arrays(tiny_config.data)
    for name, (shape, dtype) in plan.items():
        assert group[name].shape == shape and str(group[name].dtype) == dtype, name
        assert group[name].chunks[1:] == shape[1:], f"{name} must be chunked along images only"
    assert group.attrs["tasks"] == tiny_config.data.task_names()
    assert group.attrs["complete"] is True and "chunks_done" not in group.attrs
    images = group["images/rgb"][:]
    assert images.std() > 20, "images should not be blank"
    for name in tiny_config.data.task_names():
        labels = group[f"labels/{name}"][:]
        assert np.isfinite(labels.astype(np.float64)).all(), name
        assert labels.reshape(len(labels), -1).std(axis=0).max() > 0, f"{name}: labels identical for every image"


def test_splits_are_disjoint_by_scene_and_transfer_is_part_of_train(tiny_data, tiny_config):
    group = open_data(tiny_data)
    scene = group["meta/scene"][:]
    train, transfer, test = (group[f"splits/{s}"][:] for s in ("train", "transfer", "test"))
    assert len(train) + len(test) == tiny_config.data.n_images
    assert not set(scene[train]) & set(scene[test])
    assert set(transfer) <= set(train) and 0 < len(transfer) < len(train)
    assert all(np.all(np.diff(s) > 0) for s in (train, transfer, test))


def test_views_of_a_scene_share_the_room(tiny_data, tiny_config):
    group = open_data(tiny_data)
    scene, room = group["meta/scene"][:], group["labels/class_scene"][:]
    for s in np.unique(scene):
        assert len(set(room[scene == s].tolist())) == 1


def test_every_image_depends_only_on_seed_and_index(tiny_config):
    data = tiny_config.data
    batch = generate_images(data, tiny_config.seed, np.arange(8, 16))
    alone = generate_images(data, tiny_config.seed, np.array([11]))
    for name, values in batch.items():
        assert np.array_equal(values[3], alone[name][0]), name


def test_same_config_and_seed_give_identical_bytes(tmp_path):
    config = small_config(tmp_path)
    build_data(config, tmp_path / "a.zarr", progress=False)
    build_data(config, tmp_path / "b.zarr", progress=False)
    assert store_bytes(tmp_path / "a.zarr") == store_bytes(tmp_path / "b.zarr")


def test_an_interrupted_build_is_never_read_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    config = small_config(tmp_path)
    build_data(config, tmp_path / "fresh.zarr", progress=False)
    real_write, calls = dataset._write_chunk, []

    def dies_on_third_chunk(group, c, lo, hi, block):
        calls.append(c)
        if len(calls) == 3:
            group["images/rgb"][lo:hi] = block["images/rgb"]  # half a chunk on disk, then the "kill"
            raise KeyboardInterrupt
        real_write(group, c, lo, hi, block)

    monkeypatch.setattr(dataset, "_write_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_data(config, tmp_path / "killed.zarr", progress=False)
    with pytest.raises(TaskonomyError, match="incomplete"):
        open_data(tmp_path / "killed.zarr")
    assert zarr.open_group(str(tmp_path / "killed.zarr")).attrs["chunks_done"] == [0, 1]

    monkeypatch.setattr(dataset, "_write_chunk", real_write)
    assert build_data(config, tmp_path / "killed.zarr", progress=False) == "resumed"
    assert store_bytes(tmp_path / "killed.zarr") == store_bytes(tmp_path / "fresh.zarr")


def test_sigkill_midway_then_rerun_finishes_with_the_same_bytes(tmp_path):
    config = small_config(tmp_path, n_scenes=40, chunk_images=8, batch=8)
    build_data(config, tmp_path / "fresh.zarr", progress=False)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "taskonomy", "-q", "--config", str(tmp_path / "small.yaml"), "--run-dir",
           str(run_dir), "data"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill as soon as some, not all, chunks are done
        try:
            done = zarr.open_group(str(run_dir / "data.zarr"), mode="r").attrs.get("chunks_done", [])
        except Exception:
            done = []
        if len(done) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not zarr.open_group(str(run_dir / "data.zarr"), mode="r").attrs.get("complete"), "killed too late"
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert store_bytes(run_dir / "data.zarr") == store_bytes(tmp_path / "fresh.zarr")


def test_store_from_another_config_is_refused_unless_forced(tmp_path):
    build_data(small_config(tmp_path), tmp_path / "d.zarr", progress=False)
    assert build_data(small_config(tmp_path), tmp_path / "d.zarr", progress=False) == "up to date"
    other = small_config(tmp_path, image_size=24)
    with pytest.raises(TaskonomyError, match="another config"):
        build_data(other, tmp_path / "d.zarr", progress=False)
    assert open_data(tmp_path / "d.zarr")["images/rgb"].shape[-1] == 16, "the refused store must be untouched"
    assert build_data(other, tmp_path / "d.zarr", force=True, progress=False) == "built"
    assert open_data(tmp_path / "d.zarr")["images/rgb"].shape[-1] == 24


def test_only_inputs_and_views_of_configured_tasks_are_written(tmp_path):
    plan = plan_arrays(small_config(tmp_path).data)
    assert "inputs/permuted" in plan and "views/egomotion" in plan
    assert "inputs/noisy" not in plan and "views/point_matching" not in plan
    assert plan["labels/jigsaw"] == ((18,), "uint8")
    assert plan["labels/depth_zbuffer"] == ((18, 1, 16, 16), registry.get("depth_zbuffer").store_dtype)
