"""Stores at an object-storage URL (storage.url): a run whose three stores live on a local S3 server (moto, the
session fixture `s3_storage`) gives the local run's losses bit for bit; damage, interrupted stores, the lease and
an unreachable bucket behave as they do in a run folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from taskonomy import TaskonomyError
from taskonomy.cli import main
from taskonomy.config import load_config
from taskonomy.lock import LEASE, acquire, release
from taskonomy.runfolder import RunFolder
from taskonomy.storage import StoreURL, open_group
from taskonomy.store import codecs, find_damage, is_complete, mark_complete, open_complete, open_for_writing

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["normal", "class_scene"]  # a dense and a global head
STAGES = ("data", "train", "extract", "transfer", "ahp")


def _config(folder: Path, url: str | None) -> str:
    """configs/tiny.yaml cut to what a whole run needs to exercise every store at a URL in seconds: four source
    tasks, 96 images in chunks of 32, one epoch, stage II on two targets at first order (the local and the S3 run
    alike). The session's trained tiny run is not reused: its 14 sources make `extract` at a URL a minute of
    requests against the local server."""
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["data"] = {**config["data"], "n_scenes": 24, "chunk_images": 32,
                      "tasks": ["autoencoding", "depth_zbuffer", "normal", "class_scene"]}
    config["train"] = {**config["train"], "epochs": 1}
    config["transfer"] = {**config["transfer"], "epochs": 2, "targets": TARGETS, "max_order": 1}
    if url:
        config["storage"] = {"url": url}
    path = folder / ("s3.yaml" if url else "local.yaml")
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _losses(store) -> dict[str, tuple[list[str], np.ndarray]]:
    root = open_group(store, "r")
    return {t: (list(root[t].attrs["transfers"]), root[t]["losses"][...]) for t in root.attrs["targets"]}


@pytest.fixture(scope="module")
def s3_run(s3_storage, tmp_path_factory):
    """(local run, S3 run, CLI args of the S3 run): the same small config through data, train, extract,
    transfer and ahp, once in a run folder and once with its stores at s3://<bucket>/run."""
    tmp = tmp_path_factory.mktemp("s3")
    local, remote = tmp / "local", tmp / "remote"
    local_args = ["-q", "--config", _config(tmp, None), "--run-dir", str(local)]
    args = ["-q", "--config", _config(tmp, s3_storage.url("run")), "--run-dir", str(remote)]
    for command in STAGES:
        assert main([*local_args, command]) == 0, command
        assert main([*args, command]) == 0, command
    return local, remote, args


def test_a_run_with_its_stores_at_a_url_equals_the_local_run_bit_for_bit(s3_run, s3_storage):
    local, remote, _ = s3_run
    prefix = StoreURL(s3_storage.url("run"))
    assert not any((remote / name).exists() for name in ("data.zarr", "features.zarr", "transfers.zarr"))
    assert (remote / "config.yaml").is_file() and (remote / "affinity.csv").is_file()  # the small files stay
    assert all(is_complete(prefix / name) for name in ("data.zarr", "features.zarr", "transfers.zarr"))
    assert not (prefix / LEASE).fs().exists((prefix / LEASE).key)  # released when each command ended
    here, there = _losses(local / "transfers.zarr"), _losses(RunFolder(remote).transfers)
    assert list(here) == list(there) == TARGETS
    for target in TARGETS:
        assert here[target][0] == there[target][0]
        np.testing.assert_array_equal(here[target][1], there[target][1])  # bit for bit
    assert (local / "affinity.csv").read_text() == (remote / "affinity.csv").read_text()
    for name in ("data.zarr", "features.zarr"):  # the same arrays, and the chunk inventory recorded as in a folder
        there = open_complete(prefix / name, "taskonomy").attrs
        here = zarr.open_group(str(local / name), mode="r").attrs
        assert (there["arrays"], there["chunks"]) == (here["arrays"], here["chunks"])


def test_a_command_killed_at_the_url_is_resumed_after_its_lease_is_taken_over(s3_run, s3_storage):
    """SIGKILL mid-way through `transfer --force` (the first target written, transfers.zarr incomplete at the
    URL, the lease object left behind): the next `transfer` takes the dead process's lease over, finishes the
    store, and its losses are the local run's bit for bit."""
    from _faults import killed

    local, remote, args = s3_run
    config = Path(args[args.index("--config") + 1])
    killed(config, remote, ["transfer", "--force"], "taskonomy.transfer.stage:_write_target", 1, "after")
    lease = StoreURL(s3_storage.url("run")) / LEASE
    assert json.loads(lease.fs().cat_file(lease.key))["pid"] != os.getpid()  # the dead process's
    assert not is_complete(RunFolder(remote).transfers)
    assert main([*args, "transfer"]) == 0
    here, there = _losses(local / "transfers.zarr"), _losses(RunFolder(remote).transfers)
    for target in TARGETS:
        np.testing.assert_array_equal(here[target][1], there[target][1])
    assert not lease.fs().exists(lease.key)


def test_a_missing_chunk_object_is_named_with_the_store_and_its_rebuild_command(s3_run, capsys):
    _, remote, args = s3_run
    store = RunFolder(remote).features
    fs = store.fs()
    victim = sorted(k for k in fs.find(store.key) if "/normal/transfer/c/" in k)[0]
    blob = fs.cat_file(victim)
    fs.rm(victim)
    try:
        with pytest.raises(TaskonomyError, match=r"features\.zarr: array normal/transfer, chunk 0/0/0/0 .* is "
                                                 r"missing; rebuild it with `taskonomy extract --force`"):
            open_complete(store, "taskonomy extract")
        capsys.readouterr()
        assert main([*args, "transfer"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(store) in err and "taskonomy extract --force" in err
    finally:
        fs.pipe_file(victim, blob)
    open_complete(store, "taskonomy extract")


def test_a_changed_key_of_a_store_at_the_url_is_refused_as_in_a_folder(s3_run, capsys):
    """The run-folder contract: a command may not change a key of a stored result it does not rebuild, and
    stores at the URL count as the folder's."""
    _, remote, _ = s3_run
    capsys.readouterr()
    assert main(["-q", "--run-dir", str(remote), "--set", "transfer.epochs=5", "ahp"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "transfer.epochs is 2" in err and "does not rebuild transfers.zarr" in err


def test_find_damage_reads_a_store_at_a_url_as_a_folder(s3_storage):
    """A lost chunk object, a chunk failing its checksum and garbled metadata, each named as in a folder."""
    url = StoreURL(s3_storage.url("damage")) / "x.zarr"
    group = open_for_writing(url, {})
    array = group.create_array("a/b", shape=(10, 2), chunks=(4, 2), dtype="f4", fill_value=0, **codecs())
    array[...] = np.arange(20).reshape(10, 2)
    mark_complete(group)
    assert find_damage(url) is None
    fs, key = url.fs(), f"{url.key}/a/b/c/1/0"
    blob = fs.cat_file(key)
    fs.rm(key)
    assert find_damage(url) == "array a/b, chunk 1/0 (rows 4 to 7) is missing"
    fs.pipe_file(key, blob[:-1] + bytes([blob[-1] ^ 1]))
    assert find_damage(url) == ("array a/b, chunk 1/0 (rows 4 to 7), fails its CRC32C checksum (truncated or "
                                "garbled)")
    fs.pipe_file(key, blob)
    fs.pipe_file(f"{url.key}/a/b/zarr.json", b"{not json")
    assert find_damage(url) == "the metadata of a/b is unreadable"


def test_an_interrupted_store_at_a_url_is_finished_or_redone(s3_storage, tiny_config, tmp_path):
    """A store without `complete` (a kill before its last write) is resumed by its writer, to the same bytes as
    an uninterrupted build in a folder; --force redoes it."""
    from taskonomy.scenes.dataset import build_data

    config = load_config(ROOT / "configs" / "tiny.yaml", settings=["data.n_scenes=12", "data.chunk_images=12"])
    url = StoreURL(s3_storage.url("interrupted")) / "data.zarr"
    assert build_data(config, url, progress=False) == "built"
    assert build_data(config, tmp_path / "data.zarr", progress=False) == "built"
    group = open_group(url, "r+")
    group.attrs.update({"complete": False, "chunks_done": [0, 1]})  # as killed after chunk 1 was written ...
    fs = url.fs()
    for key in fs.find(url.key):
        if "/c/" in key and int(key.split("/c/")[1].split("/")[0]) > 1:
            fs.rm(key)  # ... and before the later chunks were
    with pytest.raises(TaskonomyError, match="incomplete .*run `taskonomy data` to finish it"):
        open_complete(url, "taskonomy data")
    assert build_data(config, url, progress=False) == "resumed"
    mine, reference = open_complete(url, "taskonomy data"), zarr.open_group(str(tmp_path / "data.zarr"), mode="r")
    for name in ("images/rgb", "labels/normal", "labels/class_scene", "splits/test"):
        np.testing.assert_array_equal(mine[name][...], reference[name][...])
    assert dict(mine.attrs) == dict(reference.attrs)  # the same inventory too
    open_group(url, "r+").attrs["complete"] = False
    assert build_data(config, url, force=True, progress=False) == "built"  # --force: redone from scratch
    assert dict(open_complete(url, "taskonomy data").attrs) == dict(reference.attrs)


def test_a_second_command_on_the_prefix_is_refused_while_the_lease_is_held(s3_storage, tmp_path, capsys):
    storage = load_config(None, settings=[f"storage.url={s3_storage.url('leased')}"]).storage
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    acquire(first, "taskonomy transfer", storage)
    try:
        with pytest.raises(TaskonomyError, match=rf"s3://{s3_storage.bucket}/leased is in use by process "
                                                 rf"{os.getpid()} on .*taskonomy transfer, run folder {first}"):
            acquire(second, "taskonomy extract", storage)
        # the second folder was left unlocked: a local command can still take it
        acquire(second, "taskonomy report")
        release(second)
        # as a command: one line, exit 2
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump({"storage": {"url": s3_storage.url("leased")}}))
        capsys.readouterr()
        assert main(["-q", "--config", str(config), "--run-dir", str(tmp_path / "new"), "data"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is in use by process" in err
        assert not (tmp_path / "new").exists()  # the folder it made is removed again
        # another process: its conditional put finds the lease object and it names the holder (exit 2)
        (tmp_path / "other").mkdir()
        done = subprocess.run([sys.executable, "-m", "taskonomy", "-q", "--config", str(config), "--run-dir",
                               str(tmp_path / "other"), "data"], env=os.environ.copy(), capture_output=True,
                              text=True, cwd=ROOT)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert f"leased is in use by process {os.getpid()} on " in done.stderr and str(first) in done.stderr
    finally:
        release(first)
    acquire(second, "taskonomy extract", storage)  # released: the next command takes it
    release(second)


def test_a_lease_left_by_a_killed_process_of_this_host_is_taken_over(s3_storage, tmp_path):
    storage = load_config(None, settings=[f"storage.url={s3_storage.url('stale')}"]).storage
    code = ("import sys, os; from taskonomy.lock import acquire; from taskonomy.config import load_config; "
            "acquire(sys.argv[1], 'taskonomy data', load_config(None, settings=[sys.argv[2]]).storage); "
            "os._exit(9)")  # killed while holding it: the lease object stays
    (tmp_path / "dead").mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dead"),
                           f"storage.url={s3_storage.url('stale')}"], env=os.environ.copy(), capture_output=True)
    assert done.returncode == 9, done.stderr
    lease = StoreURL(s3_storage.url("stale")) / LEASE
    assert json.loads(lease.fs().cat_file(lease.key))["pid"] != os.getpid()
    acquire(tmp_path, "taskonomy data", storage)
    assert json.loads(lease.fs().cat_file(lease.key))["pid"] == os.getpid()
    release(tmp_path)


@pytest.mark.parametrize("case", ["bucket", "credentials", "endpoint"])
def test_a_missing_bucket_credentials_or_endpoint_is_one_line_exit_2(s3_storage, tmp_path, capsys, monkeypatch,
                                                                      case):
    url = "s3://no-such-bucket/run" if case == "bucket" else s3_storage.url(case)
    if case == "endpoint":
        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{probe.getsockname()[1]}")
    if case == "credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"storage": {"url": url}}))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "keep.txt").write_text("mine")
    capsys.readouterr()
    assert main(["-q", "--config", str(config), "--run-dir", str(run_dir), "data"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and url in err, err
    assert {"bucket": "bucket no-such-bucket does not exist", "credentials": "no credentials",
            "endpoint": "the endpoint cannot be reached"}[case] in err
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "keep.txt"]  # nothing written, nothing lost


def test_storage_url_is_checked_and_changes_no_stamp(tmp_path):
    with pytest.raises(TaskonomyError, match="storage.url: expected s3://bucket"):
        load_config(None, settings=["storage.url=/tmp/stores"])
    with pytest.raises(TaskonomyError, match="credential"):
        load_config(None, settings=["storage.options={key: abc}"])
    plain, moved = load_config(None), load_config(None, settings=["storage.url=s3://bucket/prefix/"])
    assert moved.storage.url == "s3://bucket/prefix"
    from taskonomy.config import stage_of

    assert stage_of("storage.url") is None  # where the stores are, not what they hold
    from taskonomy.scenes.dataset import _attrs

    assert _attrs(plain)["config_hash"] == _attrs(moved)["config_hash"]


def test_a_store_at_a_url_records_its_chunks_like_a_folder(s3_storage, tmp_path):
    url = StoreURL(s3_storage.url("inventory")) / "x.zarr"
    group = open_for_writing(url, {"kind": "test"})
    group.create_array("a", shape=(10, 2), chunks=(4, 2), dtype="f4", fill_value=0)[...] = np.ones((10, 2))
    group.create_array("b", shape=(), dtype="i4", fill_value=0)[...] = 3
    mark_complete(group)
    local = open_for_writing(tmp_path / "x.zarr", {"kind": "test"})
    local.create_array("a", shape=(10, 2), chunks=(4, 2), dtype="f4", fill_value=0)[...] = np.ones((10, 2))
    local.create_array("b", shape=(), dtype="i4", fill_value=0)[...] = 3
    mark_complete(local)
    assert open_group(url).attrs["chunks"] == dict(local.attrs)["chunks"] == {"a": ["0-2/0"], "b": [""]}
