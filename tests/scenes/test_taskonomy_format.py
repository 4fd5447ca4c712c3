"""Taskonomy folder format: export a small data.zarr, check files and PNG encodings, read it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from taskonomy import TaskonomyError, TaskonomyWarning
from taskonomy import tasks as registry
from taskonomy.scenes.taskonomy_format import EXPORT_FILE, encoding_for, export_taskonomy
from taskonomy.scenes.taskonomy_read import read_taskonomy
from taskonomy.store import create_image_array, mark_complete, open_for_writing

N_SCENES, VIEWS, SIZE = 3, 2, 16
N = N_SCENES * VIEWS
SPLITS = {"train": [0, 1, 2, 3], "transfer": [0, 1], "test": [4, 5]}  # by scene: {0, 1}, {0}, {2}


def _labels(rng: np.random.Generator) -> dict[str, np.ndarray]:
    normal = rng.normal(size=(N, 3, SIZE, SIZE))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    object_dist = rng.random((N, registry.N_OBJECT_CLASSES))
    return {
        "depth_zbuffer": rng.uniform(0.3, 12.0, (N, 1, SIZE, SIZE)).astype(np.float16),
        "normal": normal.astype(np.float16),
        "segment_semantic": rng.integers(0, registry.N_SEMANTIC, (N, SIZE, SIZE)).astype(np.uint8),
        "curvature": rng.uniform(-10, 12, (N, 2, SIZE, SIZE)).astype(np.float16),
        "edge_texture": rng.uniform(0, 0.7, (N, 1, SIZE, SIZE)).astype(np.float16),
        "class_scene": rng.integers(0, len(registry.ROOM_TYPES), N).astype(np.uint8),
        "class_object": (object_dist / object_dist.sum(1, keepdims=True)).astype(np.float32),
        "room_layout": rng.normal(size=(N, 9)).astype(np.float32),
        "egomotion": rng.normal(size=(N, 6)).astype(np.float32),
        "point_matching": rng.integers(0, 2, (N, 1)).astype(np.float32),
    }


@pytest.fixture
def store(tmp_path) -> Path:
    """A complete data.zarr following scenes/LAYOUT.md, written with zarr directly."""
    rng = np.random.default_rng(12345)
    labels = _labels(rng)
    arrays = {"images/rgb": rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8),
              "inputs/gray": rng.integers(0, 256, (N, 1, SIZE, SIZE), dtype=np.uint8),
              "views/egomotion": rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8),
              "views/point_matching": rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8),
              **{f"labels/{k}": v for k, v in labels.items()},
              "meta/scene": np.repeat(np.arange(N_SCENES), VIEWS).astype(np.int32),
              "meta/point": np.tile(np.arange(VIEWS), N_SCENES).astype(np.int32),
              **{f"splits/{k}": np.array(v, np.int64) for k, v in SPLITS.items()}}
    path = tmp_path / "data.zarr"
    group = open_for_writing(path, {"seed": 0, "config_hash": "abc", "image_size": SIZE, "n_images": N,
                                    "tasks": list(labels), "room_types": list(registry.ROOM_TYPES)})
    for name, values in arrays.items():
        create_image_array(group, name, values.shape, str(values.dtype), 4)[:] = values
    mark_complete(group)
    return path


@pytest.fixture
def exported(store, tmp_path) -> Path:
    out = tmp_path / "export"
    assert export_taskonomy(store, out, progress=False) == N
    return out


def _png(path: Path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


def test_export_layout_and_encodings(store, exported):
    def png(domain: str, b: int = 1, p: int = 0, v: int = 0) -> Path:
        return exported / domain / f"scene{b:05d}" / f"point_{p}_view_{v}_domain_{domain}.png"

    assert _png(png("rgb")).mode == "RGB"
    assert _png(png("depth_zbuffer")).mode == "I;16"  # 16-bit grey
    group = zarr.open_group(str(store), mode="r")
    depth = group["labels/depth_zbuffer"][2, 0].astype(np.float64)  # image 2 = scene 1, point 0
    np.testing.assert_array_equal(np.asarray(_png(png("depth_zbuffer"))), np.rint(depth * 512))  # 1/512 m
    normal = group["labels/normal"][2].astype(np.float64).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(_png(png("normal"))), np.rint(normal * 127 + 127))  # 127-centred
    assert _png(png("edge_texture")).mode == "I;16"
    assert _png(png("normal")).mode == "RGB"
    assert _png(png("segment_semantic")).mode == "L"
    assert _png(png("principal_curvature")).mode == "RGB"  # the data release's name for curvature
    assert _png(png("rgb", v=1)).size == (SIZE, SIZE)  # egomotion's second view
    assert png("rgb", v=4).exists() and not png("rgb", v=2).exists()  # point_matching's; no fixated_pose
    assert not (exported / "gray").exists()  # derived inputs are not part of the format
    info = json.loads((exported / "point_info/scene00002/point_1_view_0_domain_point_info.json").read_text())
    assert info["views"] == {"egomotion": 1, "point_matching": 4}
    assert {"class_scene", "class_object", "room_layout", "egomotion", "point_matching"} <= set(info)
    meta = json.loads((exported / EXPORT_FILE).read_text())
    assert meta["splits"] == {"train": ["scene00000", "scene00001"], "transfer": ["scene00000"],
                              "test": ["scene00002"]}
    assert meta["image_size"] == SIZE and meta["attrs"]["seed"] == 0 and "complete" not in meta["attrs"]
    n_png = sum(1 for _ in exported.rglob("*.png"))
    assert n_png == N * (3 + 5)  # rgb + 2 second views + 5 dense domains


def test_round_trip(store, exported, tmp_path):
    assert read_taskonomy(exported, tmp_path / "back.zarr", progress=False) == "imported"
    a, b = zarr.open_group(str(store), mode="r"), zarr.open_group(str(tmp_path / "back.zarr"), mode="r")
    assert b.attrs["complete"] and b.attrs["image_size"] == SIZE and "config_hash" not in b.attrs
    assert set(b.attrs["tasks"]) == set(a.attrs["tasks"])
    exact = ["images/rgb", "views/egomotion", "views/point_matching", "labels/segment_semantic", "meta/scene",
             "meta/point", *(f"splits/{k}" for k in SPLITS),
             *(f"labels/{k}" for k in ("class_scene", "class_object", "room_layout", "egomotion", "point_matching"))]
    for name in exact:
        assert b[name].dtype == a[name].dtype, name
        np.testing.assert_array_equal(b[name][:], a[name][:], err_msg=name)
    close = {"depth_zbuffer": 1 / 1024, "normal": 1 / 127, "curvature": 1 / 16 + 1e-2, "edge_texture": 5e-4}
    for task, tol in close.items():
        x, y = a[f"labels/{task}"][:], b[f"labels/{task}"][:]
        assert y.dtype == np.float16 and y.shape == x.shape
        assert np.abs(y.astype(np.float32) - x.astype(np.float32)).max() <= tol, task
    assert "inputs/gray" not in b


def _reorder(exported: Path, out: Path, ordering: str, rename: dict[str, str]) -> Path:
    """The export rearranged as the original release (<building>/<domain>) or omnidata (<domain>/taskonomy)."""
    for path in exported.rglob("point_*_view_*"):
        domain, building = path.parent.parent.name, path.parent.name
        new = rename.get(domain, domain)
        name = path.name.replace(f"_domain_{domain}", f"_domain_{new}")
        folder = out / building / new if ordering == "original" else out / new / "taskonomy" / building
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return out


@pytest.mark.parametrize("ordering", ["original", "omnidata"])
def test_other_orderings_and_aliases(exported, tmp_path, ordering):
    read_taskonomy(exported, tmp_path / "ref.zarr", progress=False)
    folder = _reorder(exported, tmp_path / ordering, ordering, {"depth_zbuffer": "rgb2depth", "normal": "rgb2sfnorm"})
    assert read_taskonomy(folder, tmp_path / "b.zarr", tasks=["rgb2depth", "normal", "class_scene", "egomotion"],
                          progress=False) == "imported"
    ref, b = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r"), zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    assert sorted(b["labels"].array_keys()) == ["class_scene", "depth_zbuffer", "egomotion", "normal"]
    assert list(b["views"].array_keys()) == ["egomotion"]
    for name in ("images/rgb", "views/egomotion", "labels/depth_zbuffer", "labels/normal", "labels/class_scene"):
        np.testing.assert_array_equal(b[name][:], ref[name][:], err_msg=name)
    # without taskonomy_export.json: split by building (1 of 3 held out, 1 of the other 2 for the readouts)
    scene = b["meta/scene"][:]
    train, transfer, test = (set(scene[b[f"splits/{k}"][:]].tolist()) for k in ("train", "transfer", "test"))
    assert len(test) == 1 and len(train) == 2 and not train & test and len(transfer) == 1 and transfer <= train
    assert b.attrs["content_hash"] != ref.attrs["content_hash"]


def test_resize(exported, tmp_path):
    read_taskonomy(exported, tmp_path / "small.zarr", size=8, tasks=["segment_semantic", "depth_zbuffer"],
                   progress=False)
    small = zarr.open_group(str(tmp_path / "small.zarr"), mode="r")
    assert small["images/rgb"].shape == (N, 3, 8, 8) and small.attrs["image_size"] == 8
    assert small["labels/depth_zbuffer"].shape == (N, 1, 8, 8)
    seg = small["labels/segment_semantic"][:]
    assert seg.shape == (N, 8, 8) and seg.max() < registry.N_SEMANTIC  # nearest: ids stay ids


def test_encodings_documented_mappings():
    normal = encoding_for(registry.get("normal"))
    code, bad = normal.encode(np.array([-1.0, 0.0, 1.0], np.float32).reshape(1, 3, 1, 1))
    assert code.ravel().tolist() == [0, 127, 254] and bad == 0
    assert normal.decode(code[0]).ravel().tolist() == [-1.0, 0.0, 1.0]
    depth = encoding_for(registry.get("depth_zbuffer"))
    code, bad = depth.encode(np.array([1.0, 200.0, np.nan], np.float32).reshape(1, 1, 1, 3))
    assert code.dtype == np.uint16 and code.ravel().tolist() == [512, 65535, 65535] and bad == 2
    assert encoding_for(registry.get("segment_semantic")).classes
    assert encoding_for(registry.get("class_scene")) is None


def test_out_of_range_values_warn(store, tmp_path):
    group = zarr.open_group(str(store), mode="r+")
    group["labels/depth_zbuffer"][0, 0, 0, 0] = 200.0  # beyond 16-bit in 1/512 m
    with pytest.warns(TaskonomyWarning, match="depth_zbuffer: 1 values"):
        export_taskonomy(store, tmp_path / "out", progress=False)


def test_errors_name_the_culprit(exported, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskonomyError, match="empty: no Taskonomy files"):
        read_taskonomy(tmp_path / "empty", tmp_path / "x.zarr", progress=False)
    depth = exported / "depth_zbuffer/scene00001/point_0_view_0_domain_depth_zbuffer.png"
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(depth)  # 8-bit instead of 16-bit
    with pytest.raises(TaskonomyError, match="point_0_view_0_domain_depth_zbuffer.png: expected a 16-bit grey"):
        read_taskonomy(exported, tmp_path / "x.zarr", progress=False)
    normal = exported / "normal/scene00002/point_1_view_0_domain_normal.png"
    Image.fromarray(np.zeros((SIZE + 1, SIZE + 1, 3), np.uint8)).save(normal)
    with pytest.raises(TaskonomyError, match=r"domain_normal.png: 17x17 pixels, expected 16x16"):
        read_taskonomy(exported, tmp_path / "x.zarr", tasks=["normal"], progress=False)
    (exported / "segment_semantic/scene00000/point_1_view_0_domain_segment_semantic.png").unlink()
    with pytest.raises(TaskonomyError, match="domain segment_semantic: 5 images but rgb has 6"):
        read_taskonomy(exported, tmp_path / "x.zarr", tasks=["segment_semantic"], progress=False)
    (exported / "rgb/scene00000/point_0_view_1_domain_rgb.png").unlink()
    with pytest.raises(TaskonomyError, match="task egomotion: no second view: scene00000/point_0_view_1_domain_rgb"):
        read_taskonomy(exported, tmp_path / "x.zarr", tasks=["egomotion"], progress=False)
    with pytest.raises(TaskonomyError, match="task reshading has no labels"):
        read_taskonomy(exported, tmp_path / "x.zarr", tasks=["reshading"], progress=False)
    assert not (tmp_path / "x.zarr").exists()  # nothing half-written


def test_export_refuses_incomplete_store(store, tmp_path):
    zarr.open_group(str(store), mode="r+").attrs["complete"] = False
    with pytest.raises(TaskonomyError, match="incomplete"):
        export_taskonomy(store, tmp_path / "out", progress=False)


def test_recorded_encoding_wins(store, exported, tmp_path):
    """The reader decodes with the encodings the folder records, not with the built-in table."""
    meta = json.loads((exported / EXPORT_FILE).read_text())
    meta["encodings"]["edge_texture"]["scale"] = [65535 / 2]  # as if written over twice the range
    (exported / EXPORT_FILE).write_text(json.dumps(meta))
    read_taskonomy(exported, tmp_path / "b.zarr", tasks=["edge_texture"], progress=False)
    x = zarr.open_group(str(store), mode="r")["labels/edge_texture"][:].astype(np.float32)
    y = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["labels/edge_texture"][:].astype(np.float32)
    np.testing.assert_allclose(y, 2 * x, atol=1e-3)


def test_user_task_without_fixed_encoding(tmp_path, store, monkeypatch):
    """A registered dense task with no table entry is exported over its data's own range, and read back."""
    task = registry.Task("my_heat", "2D", "rgb", "dense", 1, "l1", "a test map")
    monkeypatch.setitem(registry._REGISTRY, task.name, task)  # registered for this test only
    assert encoding_for(task) is None
    values = np.random.default_rng(1).uniform(-3, 5, (N, 1, SIZE, SIZE)).astype(np.float16)
    group = zarr.open_group(str(store), mode="r+")
    create_image_array(group, "labels/my_heat", values.shape, "float16", 4)[:] = values
    export_taskonomy(store, tmp_path / "out", progress=False)
    assert _png(tmp_path / "out/my_heat/scene00000/point_0_view_0_domain_my_heat.png").mode == "I;16"
    read_taskonomy(tmp_path / "out", tmp_path / "b.zarr", tasks=["my_heat"], progress=False)
    back = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")["labels/my_heat"][:].astype(np.float32)
    assert np.abs(back - values.astype(np.float32)).max() <= 8 / 65535 + 4e-3


def test_generated_data_round_trip(tiny_data, tmp_path):
    """The generator's own store: every label back within its encoding's half step (plus float16 rounding)."""
    assert export_taskonomy(tiny_data, tmp_path / "out", progress=False) > 0
    read_taskonomy(tmp_path / "out", tmp_path / "back.zarr", progress=False)
    a, b = zarr.open_group(str(tiny_data), mode="r"), zarr.open_group(str(tmp_path / "back.zarr"), mode="r")
    assert sorted(b["labels"].array_keys()) == sorted(a["labels"].array_keys())
    for name in ("images/rgb", "meta/scene", "meta/point", *(f"splits/{k}" for k in a["splits"].array_keys()),
                 *(f"views/{k}" for k in a["views"].array_keys())):
        np.testing.assert_array_equal(b[name][:], a[name][:], err_msg=name)
    for name in a["labels"].array_keys():
        x, y = a[f"labels/{name}"][:].astype(np.float64), b[f"labels/{name}"][:].astype(np.float64)
        enc = encoding_for(registry.get(name))
        step = 0.5 / min(enc.scale) if enc is not None and not enc.classes else 0.0
        assert np.all(np.abs(y - x) <= step + np.abs(x) * 2.0**-11), name


def test_export_replaces_its_own_folder_only(store, exported, tmp_path):
    group = zarr.open_group(str(store), mode="r+")
    group["labels"].__delitem__("normal")
    mark_complete(group)  # a store made without normal: its inventory says so (else it reads as damaged)
    export_taskonomy(store, exported, progress=False)  # again, into the earlier export: no stale domain left
    assert not (exported / "normal").exists() and (exported / "depth_zbuffer").exists()
    assert not (exported / ".taskonomy_export_partial").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine/notes.txt").write_text("keep")
    with pytest.raises(TaskonomyError, match="mine is not empty and holds no Taskonomy export"):
        export_taskonomy(store, tmp_path / "mine", progress=False)


def test_splits_that_cut_a_building(store, tmp_path):
    group = zarr.open_group(str(store), mode="r+")
    create_image_array(group, "splits/test", (1,), "int64", 1)[:] = [5]  # scene 2, point 1 only
    mark_complete(group)  # the inventory records the new split's shape
    export_taskonomy(store, tmp_path / "out", progress=False)
    assert json.loads((tmp_path / "out" / EXPORT_FILE).read_text())["splits"]["test"] == ["scene00002/point_1"]
    read_taskonomy(tmp_path / "out", tmp_path / "b.zarr", tasks=[], progress=False)
    back = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    assert back["splits/test"][:].tolist() == [5] and back["splits/train"][:].tolist() == [0, 1, 2, 3]
    assert "labels" not in back and "views" not in back  # tasks=[]: images, meta and splits only
