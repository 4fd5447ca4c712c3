"""taskonomy.store's inventory of chunks: a complete store records the chunk files it was written with, so a chunk
file that goes missing (which Zarr would read back as fill value) is named, with its store, array, rows and the
command that rebuilds it; chunks Zarr never wrote (all fill value) are not taken for missing ones."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from _faults import cli, copy_run, one_line, snapshot
from taskonomy import TaskonomyError
from taskonomy.store import (_keys, _runs, create_image_array, damage_error, find_damage, mark_complete,
                             open_complete, open_for_writing, refresh_inventory)


def _attributes(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]


def _drop_chunk_inventory(store: Path) -> None:
    """Make `store` look written before chunk inventories existed."""
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"]["chunks"]
    (store / "zarr.json").write_text(json.dumps(meta))


# --- a chunk file gone from a store of a real run: the CLI names it ---------------------------------------------

@pytest.mark.parametrize("chunk,command,expected", [
    ("data.zarr/images/rgb/c/2/0/0/0", ["transfer", "--force"],
     "data.zarr: array images/rgb, chunk 2/0/0/0 (rows 8 to 11) is missing; rebuild it with `taskonomy data --force`"),
    ("data.zarr/labels/class_scene/c/5", ["extract"],
     "data.zarr: array labels/class_scene, chunk 5 (rows 20 to 23) is missing; rebuild it with "
     "`taskonomy data --force`"),
    ("features.zarr/normal/test/c/1/0/0/0", ["transfer", "--force"],
     "features.zarr: array normal/test, chunk 1/0/0/0 (rows 4 to 5) is missing; rebuild it with "
     "`taskonomy extract --force`"),
    ("transfers.zarr/depth_zbuffer/losses/c/0/0", ["ahp", "--force"],
     "transfers.zarr: array depth_zbuffer/losses, chunk 0/0 (rows 0 to 6) is missing; rebuild it with "
     "`taskonomy transfer --force`"),
], ids=["data-images", "data-labels-1d", "features", "transfers"])
def test_a_missing_chunk_file_is_named_with_its_store_array_rows_and_rebuild_command(faults_run, tmp_path, capsys,
                                                                                   chunk, command, expected):
    config, reference = faults_run
    copy = copy_run(reference, tmp_path)
    (copy / chunk).unlink()
    before = snapshot(copy)
    assert cli(config, copy, *command) == 2
    err = one_line(capsys)
    assert err == f"taskonomy: error: {copy}/{expected}", err
    assert snapshot(copy) == before  # nothing written, nothing deleted: the store waits for its rebuild
    # after a failed read the CLI asks damage_error, which names the same chunk
    assert str(damage_error(copy)) == f"{copy}/{expected}"


def test_complete_stores_of_a_run_record_every_chunk_file_they_hold(faults_run):
    _, reference = faults_run
    for store in ("data.zarr", "features.zarr", "transfers.zarr"):
        attributes = _attributes(reference / store)
        assert set(attributes["chunks"]) == set(attributes["arrays"])
        for name, runs in attributes["chunks"].items():
            on_disk = sorted(p.relative_to(reference / store / name / "c").as_posix()
                             for p in (reference / store / name / "c").rglob("*") if p.is_file())
            assert sorted(_keys(runs)) == on_disk, (store, name)
    # a sub-group marked complete (features.zarr: one per source) lists its own arrays, relative to itself
    source = _attributes(reference / "features.zarr" / "normal")
    assert source["complete"] and set(source["chunks"]) == {"test", "train", "transfer"}
    assert source["chunks"]["test"] == _attributes(reference / "features.zarr")["chunks"]["normal/test"]


# --- stores written before inventories of chunks existed ---------------------------------------------------------

def test_refresh_inventory_verifies_an_old_store_then_records_its_chunks(faults_run, tmp_path):
    _, reference = faults_run
    copy = copy_run(reference, tmp_path)
    store = copy / "features.zarr"
    recorded = _attributes(store)
    _drop_chunk_inventory(store)
    (store / "pixels/train/c/3/0/0/0").unlink()  # lost before the refresh: an old store cannot tell
    open_complete(store, "taskonomy extract")  # an old store keeps working as before
    assert find_damage(store) is None
    refresh_inventory(store)
    refreshed = _attributes(store)
    assert refreshed["arrays"] == recorded["arrays"] and refreshed["complete"] is True
    assert refreshed["chunks"] == {**recorded["chunks"], "pixels/train": ["0-2/0/0/0", "4/0/0/0"]}
    before = snapshot(copy)
    refresh_inventory(store)  # already current: checked, left as it is
    assert snapshot(copy) == before
    (store / "random/test/c/0/0/0/0").unlink()  # lost after the refresh: named
    with pytest.raises(TaskonomyError, match=re.escape("array random/test, chunk 0/0/0/0 (rows 0 to 3) is missing; "
                                                       "rebuild it with `taskonomy extract --force`")):
        refresh_inventory(store)


def test_refresh_inventory_refuses_a_damaged_old_store_and_leaves_it_as_it_was(faults_run, tmp_path):
    _, reference = faults_run
    copy = copy_run(reference, tmp_path)
    store = copy / "transfers.zarr"
    _drop_chunk_inventory(store)
    chunk = store / "normal/losses/c/0/0"
    blob = bytearray(chunk.read_bytes())
    blob[3] ^= 0xFF
    chunk.write_bytes(bytes(blob))
    before = snapshot(copy)
    with pytest.raises(TaskonomyError) as caught:
        refresh_inventory(store)
    assert str(caught.value) == (f"{store}: array normal/losses, chunk 0/0 (rows 0 to 6), fails its CRC32C checksum "
                                 f"(truncated or garbled); rebuild it with `taskonomy transfer --force`")
    assert snapshot(copy) == before and "chunks" not in _attributes(store)
    with pytest.raises(TaskonomyError, match=r"does not exist; run `taskonomy data` first"):
        refresh_inventory(copy / "missing" / "data.zarr")
    with pytest.raises(ValueError, match="not a store of a run folder"):
        refresh_inventory(copy / "other.zarr")


# --- chunks Zarr never wrote, sub-groups, replaced arrays ------------------------------------------------------

def test_chunks_that_are_all_fill_value_are_not_written_and_not_reported_missing(tmp_path):
    path = tmp_path / "zeros.zarr"
    group = open_for_writing(path, {})
    values = np.zeros((10, 2, 3), "float32")
    values[4:6] = 1.0  # only chunk 2 of 5 holds anything but the fill value
    create_image_array(group, "x", values.shape, "float32", 2)[:] = values
    create_image_array(group, "empty", (6,), "int64", 3)[:] = np.zeros(6, "int64")
    mark_complete(group)
    assert sorted(p.name for p in (path / "x/c").iterdir()) == ["2"]  # zarr skipped the rest
    assert _attributes(path)["chunks"] == {"empty": [], "x": ["2/0/0"]}
    assert np.array_equal(open_complete(path, "taskonomy data")["x"][:], values)
    assert find_damage(path) is None
    (path / "x/c/2/0/0").unlink()
    with pytest.raises(TaskonomyError, match=re.escape("array x, chunk 2/0/0 (rows 4 to 5) is missing; rebuild it "
                                                       "with `taskonomy data --force`")):
        open_complete(path, "taskonomy data")


def test_a_sub_group_records_its_arrays_relative_to_itself_and_the_root_every_array(tmp_path):
    path = tmp_path / "nested.zarr"
    root = open_for_writing(path, {})
    source = root.create_group("alexnet")
    create_image_array(source, "train", (5, 2), "float16", 2)[:] = np.ones((5, 2), "float16")
    mark_complete(source)
    assert _attributes(path / "alexnet")["chunks"] == {"train": ["0-2/0"]}
    assert _attributes(path).get("complete") is False  # the root is not complete until it is marked
    mark_complete(root)
    assert _attributes(path)["chunks"] == {"alexnet/train": ["0-2/0"]}
    (path / "alexnet/train/c/2/0").unlink()
    with pytest.raises(TaskonomyError, match=re.escape("array alexnet/train, chunk 2/0 (rows 4 to 4) is missing")):
        open_complete(path, "taskonomy extract")


def test_an_array_dropped_from_the_inventory_before_its_replacement_is_not_taken_for_damage(tmp_path):
    """A writer that replaces an array of a complete store in place drops it from `arrays` first (as stage II's
    former run_added did), rewrites it, then marks the store complete again: killed in between, the stale
    `chunks` entry of that array must not read as damage; marked again, both attributes are recomputed."""
    path = tmp_path / "transfers.zarr"
    root = open_for_writing(path, {})
    create_image_array(root.create_group("normal"), "losses", (7, 6), "float64", 7)[:] = np.ones((7, 6))
    create_image_array(root.create_group("depth"), "losses", (7, 6), "float64", 7)[:] = np.ones((7, 6))
    mark_complete(root)
    writable = zarr.open_group(str(path), mode="a")
    writable.attrs["arrays"] = {k: v for k, v in writable.attrs["arrays"].items() if not k.startswith("normal/")}
    writable.create_group("normal", overwrite=True)  # the replacement is killed before it writes its losses
    assert open_complete(path, "taskonomy transfer") is not None and find_damage(path) is None
    create_image_array(writable["normal"], "losses", (9, 6), "float64", 9)[:] = np.ones((9, 6))
    mark_complete(writable)  # both attributes recomputed: the new shape and its chunk
    assert _attributes(path)["arrays"]["normal/losses"] == [9, 6]
    assert _attributes(path)["chunks"] == {"depth/losses": ["0/0"], "normal/losses": ["0/0"]}


def test_chunk_keys_round_trip_through_runs_on_any_grid(tmp_path):
    for keys in (["0/0", "1/0", "2/0", "5/0"], ["3", "1", "2"], [""], [], ["0/1", "0/0", "1/0", "1/1", "3/1"],
                 [f"{i}/0/0/0" for i in (11, 9, 10, 0)]):
        assert sorted(_keys(_runs(keys))) == sorted(keys)
    assert _runs(["0/0", "1/0", "2/0", "5/0"]) == ["0-2/0", "5/0"]
    # chunked along both axes (not this project's policy): the listing walks the nested folders
    path = tmp_path / "grid.zarr"
    group = open_for_writing(path, {})
    values = np.arange(1, 37, dtype="int32").reshape(6, 6)
    values[2:4, 3:6] = 0
    group.create_array("g", shape=(6, 6), chunks=(2, 3), dtype="int32", fill_value=0)[:] = values
    mark_complete(group)
    assert _attributes(path)["chunks"] == {"g": ["0-2/0", "0/1", "2/1"]}
    assert open_complete(path, "x") is not None
    (path / "g/c/2/1").unlink()
    with pytest.raises(TaskonomyError, match=re.escape("array g, chunk 2/1 (rows 4 to 5) is missing")):
        open_complete(path, "x")


def test_listing_and_checking_thousands_of_chunks_is_cheap(tmp_path):
    """A features-like store of 3,000 chunks: marked complete and opened without reading a chunk."""
    path = tmp_path / "features.zarr"
    root = open_for_writing(path, {})
    for source in ("a", "b"):
        group = root.create_group(source)
        for split in ("train", "test"):
            create_image_array(group, split, (750, 4, 2, 2), "float16", 1, compress=False)[:] = 1
    start = time.perf_counter()
    mark_complete(root)
    marked = time.perf_counter() - start
    start = time.perf_counter()
    open_complete(path, "taskonomy extract")
    opened = time.perf_counter() - start
    assert _attributes(path)["chunks"]["a/train"] == ["0-749/0/0/0"]
    assert marked < 2.0 and opened < 1.0, (marked, opened)  # about 0.03 s and 0.015 s on a quiet core
