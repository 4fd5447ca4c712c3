"""Stage I and the feature cache on a dask.distributed cluster (taskonomy.cluster): the same checkpoints and the
same features.zarr bytes as the in-process reference run, a worker killed mid-extraction included; and the
scheduler's settings (precedence, never saved, a missing or unreachable scheduler in one line).

One LocalCluster of 2 single-threaded worker processes serves the module; the reference is the fault suite's
small run (tests/_faults.py, one thread), made once per session.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml

from _faults import DiesOnce, cli, copy_run, one_line, snapshot, store_bytes
from taskonomy.cli import main
from taskonomy.config import Config
from taskonomy.extract.checkpoints import load_checkpoint, save_checkpoint

pytest.importorskip("distributed")

TIMINGS = ("seconds", "images_per_s")  # measured, not computed


@pytest.fixture(scope="module")
def cluster():
    import dask
    from distributed import LocalCluster

    # a job whose worker dies is rerun elsewhere; a second death of the same job fails it (KilledWorker)
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def _quality(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "stage1_quality.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)]


def test_stage1_on_a_cluster_with_a_worker_killed_gives_the_local_checkpoints(faults_run, tmp_path, cluster):
    from distributed import Client

    config, reference = faults_run
    copy = copy_run(reference, tmp_path, "models", "stage1_quality.csv")
    # the worker training `normal` dies as its job starts: the job is trained again on a worker, from its seed
    plugin = DiesOnce(tmp_path / "died", "taskonomy.extract.pipeline:_train_and_test", match="'normal'")
    with Client(cluster.scheduler_address) as client:
        client.register_plugin(plugin)
        try:
            assert cli(config, copy, "train", "--scheduler", cluster.scheduler_address) == 0
        finally:
            client.unregister_worker_plugin(plugin.name)
    assert (tmp_path / "died").exists()
    for path in sorted((reference / "models").glob("*.pt")):
        expected, got = load_checkpoint(path), load_checkpoint(copy / "models" / path.name)
        assert got["hash"] == expected["hash"] and got["epoch_losses"] == expected["epoch_losses"], path.stem
        assert torch.equal(got["test_losses"], expected["test_losses"]), path.stem
        for name, tensor in expected["state_dict"].items():
            assert torch.equal(got["state_dict"][name], tensor), (path.stem, name)
    assert _quality(copy) == _quality(reference)
    # up to date: the stamps decide, nothing is sent again
    before = snapshot(copy / "models")
    assert cli(config, copy, "train", "--scheduler", cluster.scheduler_address) == 0
    assert snapshot(copy / "models") == before


def test_a_worker_killed_mid_extraction_changes_no_feature(faults_run, tmp_path, cluster, capsys):
    from distributed import Client

    config, reference = faults_run
    copy = copy_run(reference, tmp_path, "features.zarr")
    marker = tmp_path / "died"
    # the worker extracting `normal` dies before writing its second chunk (its first is on disk and recorded)
    plugin = DiesOnce(marker, "taskonomy.extract.features:_write_chunk", n=2, match="features.zarr/normal/")
    with Client(cluster.scheduler_address) as client:
        client.register_plugin(plugin)
        try:
            capsys.readouterr()
            assert main(["--config", str(config), "--run-dir", str(copy), "extract", "--scheduler",
                         cluster.scheduler_address]) == 0
        finally:
            client.unregister_worker_plugin(plugin.name)
    assert marker.exists()  # a worker did die mid-job, and the job's rerun went on from its recorded chunk
    assert re.search(r"extract: normal +resumed", capsys.readouterr().err)
    assert store_bytes(copy / "features.zarr") == store_bytes(reference / "features.zarr")


def test_run_sends_its_stages_to_the_scheduler(faults_run, tmp_path, cluster, monkeypatch):
    from taskonomy.extract import pipeline

    def refuse(*_args, **_kwargs):
        raise AssertionError("features extracted in process")

    monkeypatch.setattr(pipeline, "extract_features", refuse)  # the in-process path; a job calls extract_source
    config, reference = faults_run
    copy = copy_run(reference, tmp_path, "features.zarr")
    assert cli(config, copy, "run", "--scheduler", cluster.scheduler_address) == 0
    assert store_bytes(copy / "features.zarr") == store_bytes(reference / "features.zarr")
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    assert saved["scheduler"] is None and saved["transfer"]["scheduler"] is None  # the command's, never saved


def test_a_job_refused_on_a_worker_is_one_line(faults_run, tmp_path, cluster, capsys):
    config, reference = faults_run
    copy = copy_run(reference, tmp_path, "features.zarr")
    stale = load_checkpoint(copy / "models" / "normal.pt")
    save_checkpoint(copy / "models" / "normal.pt", {**stale, "hash": "another config"})
    capsys.readouterr()
    assert cli(config, copy, "extract", "--scheduler", cluster.scheduler_address) == 2
    assert "normal.pt was trained for another config" in one_line(capsys)


def test_the_scheduler_setting(tmp_path):
    from taskonomy.cluster import scheduler_of, wants_gpu
    from taskonomy.config import load_config

    both = Config(scheduler="tcp://a:1", transfer={"scheduler": "tcp://b:2"})
    assert [scheduler_of(both, s) for s in ("train", "extract", "transfer")] == ["tcp://a:1", "tcp://a:1", "tcp://b:2"]
    assert scheduler_of(Config(scheduler="tcp://a:1"), "transfer") == "tcp://a:1"
    assert scheduler_of(Config(), "train") is None
    assert wants_gpu("auto") and wants_gpu("cuda") and not wants_gpu("cpu")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"scheduler": "tcp://a:1"}))
    assert load_config(path).scheduler == "tcp://a:1"


def test_gpu_jobs_ask_for_a_gpu_only_where_a_worker_declares_one():
    from taskonomy.cluster import _gpu_resources

    class Client:
        def __init__(self, *resources):
            self.workers = {f"w{i}": {"resources": r} for i, r in enumerate(resources)}

        def scheduler_info(self, n_workers=-1):
            return {"workers": self.workers}

    assert _gpu_resources(Client({}, {"GPU": 1}), gpu=True) == {"GPU": 1}
    assert _gpu_resources(Client({}, {}), gpu=True) is None
    assert _gpu_resources(Client({"GPU": 1}), gpu=False) is None


def test_an_unreachable_scheduler_is_one_line_and_leaves_the_folder(faults_run, tmp_path, capsys, monkeypatch):
    from taskonomy import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    config, reference = faults_run
    copy = copy_run(reference, tmp_path)
    before = snapshot(copy)
    capsys.readouterr()
    assert cli(config, copy, "train", "--force", "--scheduler", "tcp://127.0.0.1:9") == 2
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in one_line(capsys)
    assert snapshot(copy) == before


def test_a_scheduler_without_distributed_is_one_line(faults_run, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    config, reference = faults_run
    copy = copy_run(reference, tmp_path)
    capsys.readouterr()
    assert cli(config, copy, "extract", "--force", "--scheduler", "tcp://127.0.0.1:9") == 2
    assert "needs the distributed package" in one_line(capsys)
