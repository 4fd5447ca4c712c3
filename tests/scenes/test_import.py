"""Real data streamed in: `data --from-taskonomy` (a folder without our export file) and `data --from-arrays`:
kill and resume to the same bytes, splits by building, selection, the content-hash identity, every stage on it,
hostile arrays refused in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from _faults import cli, killed, one_line, store_bytes, write_config

from taskonomy.config import load_config
from taskonomy.scenes.dataset import build_data, data_hash
from taskonomy.scenes.taskonomy_format import EXPORT_FILE, export_taskonomy

STAGES = ("train", "extract", "transfer", "ahp", "solve")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """The fault suite's small data set (8 buildings x 3 views, 16 px, 3 tasks, chunks of 4) as a Taskonomy folder
    without our export file (as a real subset comes) and as .npy arrays."""
    root = tmp_path_factory.mktemp("import_world")
    config = write_config(root)
    build_data(load_config(config), root / "gen.zarr", progress=False)
    export_taskonomy(root / "gen.zarr", root / "folder", progress=False)
    (root / "folder" / EXPORT_FILE).unlink()
    group = zarr.open_group(str(root / "gen.zarr"), mode="r")
    np.save(root / "images.npy", np.moveaxis(group["images/rgb"][:], 1, -1))
    for task in ("depth_zbuffer", "normal", "class_scene"):
        np.save(root / f"{task}.npy", group[f"labels/{task}"][:])
    np.save(root / "buildings.npy", np.array([f"house_{s}" for s in group["meta/scene"][:]]))
    return {"root": root, "config": config, "folder": root / "folder"}


def _splits(store: Path) -> dict[str, set[int]]:
    group = zarr.open_group(str(store), mode="r")
    scene = group["meta/scene"][:]
    return {k: set(scene[group[f"splits/{k}"][:]].tolist()) for k in ("train", "transfer", "test")}


def _arrays_args(world: dict[str, Path], **labels: str) -> list[str]:
    root = world["root"]
    given = labels or {t: str(root / f"{t}.npy") for t in ("depth_zbuffer", "normal", "class_scene")}
    return ["data", "--from-arrays", str(root / "images.npy"), "--building-ids", str(root / "buildings.npy"),
            *(a for t, p in given.items() for a in ("--labels", f"{t}={p}"))]


def test_kill_midway_then_resume_to_the_same_bytes(world, tmp_path):
    config, command = world["config"], ["data", "--from-taskonomy", str(world["folder"])]
    assert cli(config, tmp_path / "fresh", *command) == 0
    killed(config, tmp_path / "run", command, "taskonomy.scenes._import:_write_chunk", 3)
    store = tmp_path / "run" / "data.zarr"
    attrs = zarr.open_group(str(store), mode="r").attrs
    assert not attrs.get("complete") and attrs["chunks_done"] == [0, 1, 2]  # 3 of 6 chunks on disk
    assert cli(config, tmp_path / "run", *command) == 0
    assert store_bytes(store) == store_bytes(tmp_path / "fresh" / "data.zarr")
    assert cli(config, tmp_path / "run", *command) == 0  # up to date: nothing rewritten
    assert store_bytes(store) == store_bytes(tmp_path / "fresh" / "data.zarr")


def test_folder_without_export_file_goes_through_every_stage(world, tmp_path, capsys):
    config, run = world["config"], tmp_path / "run"
    assert cli(config, run, "data", "--from-taskonomy", str(world["folder"])) == 0
    splits = _splits(run / "data.zarr")
    assert len(splits["test"]) == 2 and len(splits["train"]) == 6 and not splits["train"] & splits["test"]
    assert len(splits["transfer"]) == 3 and splits["transfer"] <= splits["train"]  # 0.25 and 0.5 of 8 buildings
    for stage in STAGES:
        assert cli(config, run, stage) == 0, stage
    assert (run / "taxonomy.json").exists()
    first = data_hash(zarr.open_group(str(run / "data.zarr"), mode="r"))

    # another selection is another identity: the cached features are refused, then recomputed, never reused
    capsys.readouterr()
    assert cli(config, run, "data", "--from-taskonomy", str(world["folder"]), "--limit", "20", "--force") == 0
    second = data_hash(zarr.open_group(str(run / "data.zarr"), mode="r"))
    assert second != first
    assert cli(config, run, "transfer") == 2
    assert "was made from another data.zarr" in one_line(capsys)
    assert cli(config, run, "train") == 0 and cli(config, run, "extract") == 0
    assert zarr.open_group(str(run / "features.zarr"), mode="r").attrs["data_hash"] == second


def test_selection_and_identity(world, tmp_path):
    config, folder = world["config"], str(world["folder"])
    assert cli(config, tmp_path / "a", "data", "--from-taskonomy", folder, "--buildings",
               "scene00001,scene00003,scene00006", "--limit", "7") == 0
    group = zarr.open_group(str(tmp_path / "a" / "data.zarr"), mode="r")
    scene = group["meta/scene"][:]
    assert group.attrs["n_images"] == 7 and sorted(np.bincount(scene)[[1, 3, 6]].tolist()) == [2, 2, 3]
    assert set(scene.tolist()) == {1, 3, 6}  # --limit takes from each building in turn
    assert cli(config, tmp_path / "b", "data", "--from-taskonomy", folder, "--buildings",
               "scene00001,scene00003,scene00006") == 0
    assert cli(config, tmp_path / "c", "data", "--from-taskonomy", folder, "--buildings",
               "scene00006,scene00003,scene00001") == 0
    ids = [data_hash(zarr.open_group(str(tmp_path / r / "data.zarr"), mode="r")) for r in "abc"]
    assert ids[0] != ids[1] and ids[1] == ids[2]  # the content, not the command line, is the identity

    # the same content from another path is the same identity
    copy = tmp_path / "copy"
    shutil.copytree(world["folder"], copy)
    assert cli(config, tmp_path / "d", "data", "--from-taskonomy", str(copy), "--buildings",
               "scene00001,scene00003,scene00006") == 0
    assert data_hash(zarr.open_group(str(tmp_path / "d" / "data.zarr"), mode="r")) == ids[1]


def test_selection_errors(world, tmp_path, capsys):
    config, folder = world["config"], str(world["folder"])
    assert cli(config, tmp_path / "r", "data", "--from-taskonomy", folder, "--buildings", "scene00001,nowhere") == 2
    assert "no building nowhere" in one_line(capsys)
    assert cli(config, tmp_path / "r", "data", "--from-taskonomy", folder, "--buildings", "scene00001") == 2
    assert "splits by building need at least 2" in one_line(capsys)
    assert cli(config, tmp_path / "r", "data", "--limit", "3") == 2
    assert "go with --from-taskonomy or --from-arrays" in one_line(capsys)
    assert not (tmp_path / "r").exists()
    assert cli(config, tmp_path / "g", "data") == 0  # a generated store is not replaced without --force
    assert cli(config, tmp_path / "g", "data", "--from-taskonomy", folder) == 2
    assert "holds other data" in one_line(capsys)


def test_from_arrays_matches_the_folder_and_runs(world, tmp_path):
    config = world["config"]
    assert cli(config, tmp_path / "run", *_arrays_args(world)) == 0
    store = zarr.open_group(str(tmp_path / "run" / "data.zarr"), mode="r")
    gen = zarr.open_group(str(world["root"] / "gen.zarr"), mode="r")
    for name in ("images/rgb", "labels/depth_zbuffer", "labels/normal", "labels/class_scene", "meta/point"):
        np.testing.assert_array_equal(store[name][:], gen[name][:], err_msg=name)
    assert store.attrs["buildings"] == sorted({f"house_{s}" for s in range(8)})
    assert len(_splits(tmp_path / "run" / "data.zarr")["test"]) == 2
    for stage in STAGES:
        assert cli(config, tmp_path / "run", stage) == 0, stage
    before = store_bytes(tmp_path / "run" / "data.zarr")
    assert cli(config, tmp_path / "run", "data") == 0  # as `taskonomy run` calls it: the import is kept
    assert store_bytes(tmp_path / "run" / "data.zarr") == before


def test_from_arrays_resizes_and_accepts_float_images_and_zarr(world, tmp_path):
    root = world["root"]
    images = np.load(root / "images.npy")
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2).astype(np.float32) / 255  # 32 px, floats
    np.save(tmp_path / "big.npy", big)
    depth = np.load(root / "depth_zbuffer.npy")
    zarr.create_array(str(tmp_path / "depth.zarr"), data=np.repeat(np.repeat(depth, 2, axis=2), 2, axis=3))
    args = ["data", "--from-arrays", str(tmp_path / "big.npy"), "--building-ids", str(root / "buildings.npy"),
            "--labels", f"rgb2depth={tmp_path / 'depth.zarr'}"]
    assert cli(world["config"], tmp_path / "run", *args) == 0
    store = zarr.open_group(str(tmp_path / "run" / "data.zarr"), mode="r")
    assert store["images/rgb"].shape == (24, 3, 16, 16) and store["labels/depth_zbuffer"].shape == (24, 1, 16, 16)
    assert np.abs(store["images/rgb"][:].astype(int) - np.moveaxis(images, -1, 1)).mean() < 4  # bilinear, antialiased
    assert store.attrs["tasks"] == ["depth_zbuffer"]


def _hostile(root: Path, tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, the expected message) for each array that must be refused."""
    depth = np.load(root / "depth_zbuffer.npy")
    files = {
        "short": depth[:20], "nan": np.where(np.arange(24)[:, None, None, None] == 5, np.nan, depth),
        "wrong_shape": depth[:, :, :8, :8], "strings": np.array(["a"] * 24),
        "classes": np.full(24, 200, np.uint8), "float_classes": np.zeros(24, np.float32),
        "objects": np.array([None] * 24, dtype=object),
    }
    for name, values in files.items():
        np.save(tmp / f"{name}.npy", values, allow_pickle=True)
    np.save(tmp / "bright.npy", np.load(root / "images.npy").astype(np.float32))  # floats over [0, 1]
    (tmp / "garbage.npy").write_bytes(b"not an array")
    images, ids = str(root / "images.npy"), str(root / "buildings.npy")

    def args(label: str, image: str = images, building: str = ids) -> list[str]:
        return ["data", "--from-arrays", image, "--building-ids", building, "--labels", label]

    return [
        (args(f"depth_zbuffer={tmp / 'short.npy'}"), "shape (20, 1, 16, 16), expected (24, 1, 16, 16)"),
        (args(f"depth_zbuffer={tmp / 'wrong_shape.npy'}"), "shape (24, 1, 8, 8), expected (24, 1, 16, 16)"),
        (args(f"depth_zbuffer={tmp / 'nan.npy'}"), "NaN or inf (first at image 5)"),
        (args(f"depth_zbuffer={tmp / 'strings.npy'}"), "shape (24,), expected (24, 1, 16, 16)"),
        (args(f"class_scene={tmp / 'classes.npy'}"), "class ids must lie in 0..4; found 200..200"),
        (args(f"class_scene={tmp / 'float_classes.npy'}"), "dtype float32, expected integer class ids"),
        (args(f"class_scene={tmp / 'objects.npy'}"), "holds Python objects (refused: allow_pickle=False)"),
        (args(f"class_scene={tmp / 'garbage.npy'}"), "is not a .npy file or Zarr array"),
        (args(f"class_scene={tmp / 'missing.npy'}"), "missing.npy does not exist"),
        (args(f"no_such_task={root / 'class_scene.npy'}"), "unknown task 'no_such_task'"),
        (args(f"egomotion={root / 'class_scene.npy'}"), "needs second views"),
        (args(f"jigsaw={root / 'class_scene.npy'}"), "takes no jigsaw labels"),
        (args(f"class_scene={root / 'class_scene.npy'}", image=str(tmp / "bright.npy")), "must lie in [0, 1]"),
        (args(f"class_scene={root / 'class_scene.npy'}", building=str(tmp / "short.npy")),
         "building ids"),
        (args(f"class_scene={root / 'class_scene.npy'}", image=str(root / "class_scene.npy")),
         "expected (N, H, H, 3) uint8 or float in [0, 1]"),
        (args("class_scene"), "--labels expects TASK=PATH"),
    ]


def test_hostile_arrays_are_refused_in_one_line(world, tmp_path, capsys):
    for args, message in _hostile(world["root"], tmp_path):
        assert cli(world["config"], tmp_path / "run", *args) == 2, args
        line = one_line(capsys)
        assert message in line, (message, line)
        assert not (tmp_path / "run").exists(), args  # nothing written


def test_derived_inputs_are_made_as_the_generator_makes_them(tmp_path):
    """Tasks that read derived inputs (colorization gray, denoising noisy, jigsaw permuted): a Taskonomy folder has
    none, so the import makes them from rgb with the recorded seed, equal to the generator's, and they train."""
    config = write_config(tmp_path, data={"tasks": ["depth_zbuffer", "denoising", "jigsaw", "colorization"]})
    build_data(load_config(config), tmp_path / "gen.zarr", progress=False)
    export_taskonomy(tmp_path / "gen.zarr", tmp_path / "folder", progress=False)
    assert cli(config, tmp_path / "run", "data", "--from-taskonomy", str(tmp_path / "folder")) == 0
    gen, store = (zarr.open_group(str(p), mode="r") for p in (tmp_path / "gen.zarr", tmp_path / "run" / "data.zarr"))
    assert sorted(store["inputs"].array_keys()) == ["gray", "noisy", "permuted"]
    for name in ("inputs/gray", "inputs/noisy", "inputs/permuted", "labels/jigsaw", "images/rgb"):
        np.testing.assert_array_equal(store[name][:], gen[name][:], err_msg=name)
    assert cli(config, tmp_path / "run", "train") == 0
