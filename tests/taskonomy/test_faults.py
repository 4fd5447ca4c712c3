"""Faults and bad input across the pipeline (docs/faults.md): a locked run folder, damaged stores, hostile input.

Each case runs the CLI as a user does (`taskonomy.cli.main`) on a private copy of a complete small run folder and
asserts exit status 2, one line on stderr naming the culprit, and that the run folder's outputs are unchanged.
Kill and resume at every stage: test_faults_resume.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from _faults import cli, copy_run, one_line, snapshot, write_config
from conftest import ROOT
from taskonomy import tasks as registry
from taskonomy.lock import run_lock


@pytest.fixture
def run(faults_run, tmp_path) -> tuple[Path, Path, dict[str, bytes]]:
    """(config, a private copy of the complete small run, its files' bytes before the test)."""
    config, reference = faults_run
    copy = copy_run(reference, tmp_path)
    return config, copy, snapshot(copy)


@pytest.fixture(autouse=True)
def _registry_untouched():
    """Targets added from the cache live in the run folder, never in the process-wide task dictionary."""
    before = [t.name for t in registry.all_tasks()]
    yield
    assert [t.name for t in registry.all_tasks()] == before


# --- a second writer on the same run folder ---------------------------------------------------------------------

def test_a_second_process_on_a_locked_run_folder_is_refused(run):
    config, copy, before = run
    with run_lock(copy, "taskonomy transfer"):  # this process is the first writer, mid-stage
        second = subprocess.run([sys.executable, "-m", "taskonomy", "-q", "--config", str(config), "--run-dir",
                                 str(copy), "ahp", "--force"], capture_output=True, text=True, cwd=ROOT)
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1, second.stderr
    assert f"run folder {copy} is in use by process {os.getpid()} (taskonomy transfer)" in second.stderr
    assert snapshot(copy) == before


def test_a_killed_holder_leaves_no_stale_lock_and_run_takes_its_own_lock_again(run, capsys):
    config, copy, before = run
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from taskonomy.lock import acquire; "
                               "acquire(sys.argv[1], 'taskonomy train'); print('held', flush=True); time.sleep(300)",
                               str(copy)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline() == "held\n"
        assert cli(config, copy, "solve") == 2
        assert f"in use by process {holder.pid} (taskonomy train)" in one_line(capsys)
        assert snapshot(copy) == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel dropped the dead holder's lock; `run` re-enters it for every stage it calls
    assert cli(config, copy, "run") == 0
    with run_lock(copy, "taskonomy test"):  # and released it when it ended
        pass


# --- damaged stores: one line naming the store, the array and the command that rebuilds it -----------------------

def _garble(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _first_chunk(array_dir: Path) -> Path:
    return sorted(p for p in (array_dir / "c").rglob("*") if p.is_file())[0]


def _set_attr(store: Path, key: str, value) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"][key] = value
    (store / "zarr.json").write_text(json.dumps(meta))


def _shrink(store: Path, name: str) -> None:
    """Replace array `name` by one of two images fewer (a store whose image counts disagree)."""
    group = zarr.open_group(str(store), mode="r+")
    values = group[name][:-2]
    array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=group[name].chunks, overwrite=True)
    array[:] = values


@pytest.mark.parametrize("damage,command,expected", [
    (lambda r: [_garble(c) for c in (r / "data.zarr/labels/normal/c").rglob("*") if c.is_file()],
     ["data", "--preview", "{tmp}/sheet.png"],
     r"data.zarr: array labels/normal, chunk 0/0/0/0 \(rows 0 to 3\), fails its CRC32C checksum \(truncated or "
     r"garbled\); rebuild it with `taskonomy data --force`"),
    (lambda r: _truncate(_first_chunk(r / "transfers.zarr/normal/losses")), ["ahp", "--force"],
     r"transfers.zarr: array normal/losses, chunk 0/0 \(rows 0 to 6\), fails its CRC32C checksum .*"
     r"`taskonomy transfer --force`"),
    (lambda r: _garble(_first_chunk(r / "transfers.zarr/class_scene/losses")), ["evaluate"],
     r"transfers.zarr: array class_scene/losses, .* fails its CRC32C checksum .*`taskonomy transfer --force`"),
    (lambda r: shutil.rmtree(r / "data.zarr/labels/class_scene"), ["train"],
     r"data.zarr: array labels/class_scene is missing; rebuild it with `taskonomy data --force`"),
    (lambda r: shutil.rmtree(r / "transfers.zarr/depth_zbuffer/losses"), ["ahp", "--force"],
     r"transfers.zarr: array depth_zbuffer/losses is missing; rebuild it with `taskonomy transfer --force`"),
    (lambda r: (r / "features.zarr/normal/test/zarr.json").write_text("{not json"), ["transfer", "--force"],
     r"features.zarr: the metadata of array normal/test is unreadable; rebuild it with `taskonomy extract --force`"),
    (lambda r: (r / "data.zarr/zarr.json").write_bytes(b"\x00\xff garbage"), ["extract"],
     r"data.zarr is not a readable Zarr store \(.*\); rebuild it with `taskonomy data --force`"),
    (lambda r: _shrink(r / "data.zarr", "labels/depth_zbuffer"), ["train"],
     r"data.zarr: array labels/depth_zbuffer has shape \[22, 1, 16, 16\], expected \[24, 1, 16, 16\]"),
    (lambda r: _set_attr(r / "features.zarr", "data_hash", "0123456789abcdef"), ["transfer", "--force"],
     r"features.zarr was made from another data.zarr \(data hash 0123456789abcdef != .*\); run `taskonomy extract`"),
    (lambda r: _set_attr(r / "data.zarr", "config_hash", "made-by-generator-0"), ["train"],
     r"data.zarr was made from another config or generator version \(hash made-by-generator-0 != .*\); run "
     r"`taskonomy data --force`"),
], ids=["garbled-data-chunk", "truncated-transfers-chunk", "garbled-chunk-evaluate", "missing-data-array",
        "missing-transfers-array", "garbled-array-metadata", "garbled-store-metadata", "image-counts-disagree",
        "features-from-other-data", "data-from-other-code-version"])
def test_a_damaged_store_is_named_with_its_array_and_rebuild_command(run, tmp_path, capsys, damage, command,
                                                                     expected):
    config, copy, _ = run
    damage(copy)
    before = snapshot(copy)
    assert cli(config, copy, *[a.replace("{tmp}", str(tmp_path)) for a in command]) == 2
    assert re.search(expected, one_line(capsys))
    assert snapshot(copy) == before and not (tmp_path / "sheet.png").exists()


def test_a_checkpoint_from_another_train_config_is_refused_by_extract(run, capsys, tmp_path):
    config, copy, before = run
    other = write_config(tmp_path, "other.yaml", train={"epochs": 2})
    assert cli(other, copy, "extract") == 2  # the config differs from the folder's in a key of models/
    err = one_line(capsys)
    assert f"train.epochs is 1 in {copy}/config.yaml, 2 here; `taskonomy extract` does not rebuild models/" in err
    assert "run `taskonomy train`" in err
    assert snapshot(copy) == before
    # the folder's config.yaml edited by hand: the checkpoints' stamps still refuse them
    import yaml

    edited = yaml.safe_load(before["config.yaml"])
    edited["train"]["epochs"] = 2
    (copy / "config.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    assert cli(other, copy, "extract") == 2
    err = one_line(capsys)
    assert f"checkpoint {copy}/models/depth_zbuffer.pt was trained for another config" in err
    assert "run `taskonomy train`" in err
    before.pop("config.yaml"), (after := snapshot(copy)).pop("config.yaml")
    assert after == before


class _Exploit:
    """Unpickling it would create `marker`: pickled code that weights_only loading must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("payload,expected", [
    (lambda marker: [1, 2, 3], "is not a stage I checkpoint (no state_dict and hash)"),
    (lambda marker: {"state_dict": {"w": torch.zeros(2)}}, "is not a stage I checkpoint"),
    (lambda marker: {"hash": "x", "state_dict": _Exploit(marker)}, "is unreadable or unsafe (Weights only load failed"),
], ids=["a-list", "no-hash", "pickled-code"])
def test_a_checkpoint_that_is_not_a_state_dict_or_carries_code_is_refused(run, tmp_path, capsys, payload, expected):
    config, copy, _ = run
    marker = tmp_path / "pwned"
    torch.save(payload(marker), copy / "models" / "normal.pt")
    before = snapshot(copy)
    for command in ("extract", "transfer"):
        assert cli(config, copy, command) == 2
        err = one_line(capsys)
        assert f"checkpoint {copy}/models/normal.pt {expected}" in err, err
    assert not marker.exists(), "weights_only loading ran pickled code"
    assert snapshot(copy) == before
    if "unsafe" in expected:  # the payload is live: a load without weights_only runs it
        torch.load(copy / "models" / "normal.pt", weights_only=False)
        assert marker.exists()


# --- hostile input -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sections,expected", [
    ({"data": {"tasks": ["normal", "a/b"]}}, "data.tasks: invalid task name 'a/b'"),
    ({"data": {"tasks": [".."]}}, "data.tasks: invalid task name '..'"),
    ({"data": {"tasks": ["depth zbuffer"]}}, "data.tasks: invalid task name 'depth zbuffer'"),
    ({"data": {"tasks": ["nörmal"]}}, "data.tasks: invalid task name 'nörmal'"),
    ({"train": {"tasks": ["../normal"]}}, "train.tasks: invalid task name '../normal'"),
    ({"transfer": {"targets": ["normal", "a b"]}}, "transfer.targets: invalid task name 'a b'"),
    ({"taxonomy": {"targets": ["döpth"]}}, "taxonomy.targets: invalid task name 'döpth'"),
    ({"extract": {"taskonomy_encoders": {"../up": "x.pt"}}}, "extract.taskonomy_encoders: invalid task name '../up'"),
    ({"data": {"tasks": ["normal", "rgb2sfnorm"]}}, "data.tasks: task 'normal' is listed twice"),
    ({"train": {"tasks": ["normal", "normal"]}}, "train.tasks: task 'normal' is listed twice"),
    ({"transfer": {"targets": ["class_scene", "class_places"]}}, "transfer.targets: target 'class_scene' is listed"),
    ({"taxonomy": {"sources": ["normal", "normal"]}}, "taxonomy.sources: source 'normal' is listed twice"),
    ({"taxonomy": {"budget": -1}}, "taxonomy.budget: Input should be greater than or equal to 0"),
    ({"taxonomy": {"importance": {"normal": -2}}}, "importance of 'normal' must be a finite number >= 0"),
    ({"data": {"splits": {"test": 0}}}, "data.splits.test: Input should be greater than 0"),
    ({"data": {"image_size": "big"}}, "data.image_size: Input should be a valid integer"),
    ({"data": {"colour": True}}, "unknown key 'data.colour'"),
    ({"stage5": {}}, "unknown key 'stage5'"),
], ids=lambda v: None if isinstance(v, dict) else "")
def test_hostile_configs_are_refused_before_anything_is_written(tmp_path, capsys, sections, expected):
    config = write_config(tmp_path, **sections)
    assert cli(config, tmp_path / "run", "data") == 2
    err = one_line(capsys)
    assert f"{config}: " in err and expected in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,expected", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "not valid YAML (not UTF-8 text: byte 0)"),
    (b"data: {image_size: 16\n", "not valid YAML at line"),
    (b"\tdata: 1\n", "not valid YAML"),
    (b"- data\n- train\n", "expected a mapping of keys at the top level, got list"),
    (b"just a string\n", "expected a mapping of keys at the top level, got str"),
])
def test_a_config_that_is_not_a_yaml_mapping_is_refused(tmp_path, capsys, text, expected):
    (tmp_path / "bad.yaml").write_bytes(text)
    assert cli(tmp_path / "bad.yaml", tmp_path / "run", "data") == 2
    assert expected in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_split_fractions_that_leave_a_split_empty_are_refused_before_generating(tmp_path, capsys):
    config = write_config(tmp_path, data={"n_scenes": 4, "splits": {"test": 0.9, "transfer": 0.5}})
    assert cli(config, tmp_path / "run", "data") == 2
    assert "data.splits.test=0.9 leaves no training scene out of 4" in one_line(capsys)
    assert not (tmp_path / "run" / "data.zarr").exists()


def test_an_imported_data_set_without_test_or_transfer_images_is_refused_by_the_stages(run, tmp_path, capsys):
    config, copy, _ = run
    assert cli(config, copy, "data", "--export-taskonomy", str(tmp_path / "folder")) == 0
    assert cli(config, tmp_path / "with_splits", "data", "--from-taskonomy", str(tmp_path / "folder")) == 0
    assert cli(config, tmp_path / "with_splits", "train") == 0  # an imported store has no config hash: it trains
    meta = json.loads((tmp_path / "folder" / "taskonomy_export.json").read_text())
    del meta["splits"]["transfer"]  # recorded splits are kept as they are: here without transfer images
    (tmp_path / "folder" / "taskonomy_export.json").write_text(json.dumps(meta))
    assert cli(config, tmp_path / "no_splits", "data", "--from-taskonomy", str(tmp_path / "folder")) == 0
    capsys.readouterr()
    assert cli(config, tmp_path / "no_splits", "train") == 2
    assert "data.zarr has no transfer images (array splits/transfer is missing or empty)" in one_line(capsys)
    assert not (tmp_path / "no_splits" / "models").exists()
    # a folder without the export file (a real Taskonomy subset) is split by building: tests/scenes/test_import.py


@pytest.mark.parametrize("args,expected", [
    (["--budget", "-1"], "Invalid value for '--budget': -1.0 is not in the range x>=0"),
    (["--budget", "nan"], "command line: taxonomy.budget: Input should be a finite number"),
    (["--budget", "inf"], "command line: taxonomy.budget: Input should be a finite number"),
    (["--importance", "normal=-0.5"], "importance of 'normal' must be a finite number >= 0, got -0.5"),
    (["--importance", "normal=nan"], "importance of 'normal' must be a finite number >= 0, got nan"),
    (["--importance", "normal=inf"], "importance of 'normal' must be a finite number >= 0, got inf"),
    (["--importance", "normal"], "expected TASK=NUMBER, got 'normal'"),
    (["--importance", "../normal=1"], "invalid task name '../normal'"),
    (["--cost", "depth_zbuffer=-3"], "cost of 'depth_zbuffer' must be a finite number >= 0"),
    (["--importance", "warp_drive=1"], "taxonomy.importance names 'warp_drive', which is not a target in"),
    (["--max-order", "0"], "Invalid value for '--max-order'"),
])
def test_negative_or_unknown_budget_importance_and_cost_are_refused(run, capsys, args, expected):
    config, copy, before = run
    assert cli(config, copy, "solve", *args) == 2
    assert expected in one_line(capsys)
    assert snapshot(copy) == before  # config.yaml too: written only when a command succeeds


@pytest.mark.parametrize("name", ["a/b", "..", "../evil", "near wall", "nähe", "Normal", "_x", "", "x" * 65])
def test_add_target_refuses_names_that_are_not_store_paths(run, tmp_path, capsys, name):
    config, copy, before = run
    np.save(tmp_path / "labels.npy", np.zeros((24, 1), np.float32))
    assert cli(config, copy, "add-target", name, "--labels", str(tmp_path / "labels.npy"), "--loss", "l2") == 2
    assert f"invalid task name {name!r}" in one_line(capsys)
    assert snapshot(copy) == before


@pytest.mark.parametrize("labels,loss,expected", [
    (np.full((24, 1), np.nan, np.float32), "l2", "hold NaN or inf (first at image 0)"),
    (np.r_[np.zeros((5, 2)), [[0, np.inf]], np.zeros((18, 2))], "l1", "hold NaN or inf (first at image 5)"),
    (np.r_[np.zeros((23, 1)), [[-np.inf]]], "l2", "hold NaN or inf (first at image 23)"),
    (np.zeros((0, 1), np.float32), "l2", "have 0 rows; data.zarr has 24 images"),
    (np.array([{"a": 1}] * 24, dtype=object), "l2", "is not a .npy file or Zarr array (ValueError)"),
    (np.array(["x"] * 24), "l2", "have dtype <U1; expected numbers"),
    (np.zeros(24, np.uint8), "ce", "hold a single class: nothing to learn"),
])
def test_add_target_refuses_labels_with_nan_inf_or_the_wrong_shape(run, tmp_path, capsys, labels, loss, expected):
    config, copy, before = run
    np.save(tmp_path / "labels.npy", labels, allow_pickle=True)
    assert cli(config, copy, "add-target", "odd_one", "--labels", str(tmp_path / "labels.npy"), "--loss", loss) == 2
    err = one_line(capsys)
    assert expected in err and "labels.npy" in err, err
    assert snapshot(copy) == before


def test_a_garbled_list_of_added_targets_is_one_line(run, capsys):
    config, copy, _ = run
    (copy / "added_targets.json").write_text('[{"name": "../x"}')
    assert cli(config, copy, "transfer") == 2
    assert f"{copy}/added_targets.json is unreadable (JSONDecodeError)" in one_line(capsys)


def test_a_dictionary_of_one_task_runs_every_stage(tmp_path):
    """One task has no other task to transfer from: controls only; its taxonomy supervises the task itself."""
    config = write_config(tmp_path, data={"tasks": ["normal"]})
    assert cli(config, tmp_path / "run", "run") == 0
    taxonomy = json.loads((tmp_path / "run" / "taxonomy.json").read_text())
    assert taxonomy["supervised"] == ["normal"] and taxonomy["policy"]["normal"]["transfer"] == "full"
    assert (tmp_path / "run" / "affinity.csv").read_text().splitlines()[0].split(",")[:2] == ["target", "full"]
