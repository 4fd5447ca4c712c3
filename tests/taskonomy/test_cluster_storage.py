"""Beyond one machine, all at once: the fault suite's small config with its three stores on the local S3 server
(`s3_storage`) and stage I, extraction and stage II on a LocalCluster of 2 single-threaded worker processes, one of
which dies mid-extraction, gives the in-process local run's losses bit for bit; while a command holds the prefix,
a second run folder on it is refused."""

from __future__ import annotations

import numpy as np
import pytest

from _faults import DiesOnce, cli, one_line, write_config
from taskonomy.artifacts import read_losses
from taskonomy.config import load_config
from taskonomy.lock import acquire, release
from taskonomy.runfolder import RunFolder
from taskonomy.storage import StoreURL
from taskonomy.store import is_complete

pytest.importorskip("distributed")


def test_stores_at_a_url_and_every_stage_on_a_cluster_give_the_local_losses(faults_run, s3_storage, tmp_path,
                                                                               capsys):
    import dask
    from distributed import Client, LocalCluster

    _, reference = faults_run
    url = s3_storage.url("cluster-run")
    config = write_config(tmp_path, storage={"url": url})
    run_dir = tmp_path / "run"
    marker = tmp_path / "died"
    # the worker extracting `normal` dies before writing its second chunk; its job is rerun on a worker
    plugin = DiesOnce(marker, "taskonomy.extract.features:_write_chunk", n=2, match="/normal/")
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster.scheduler_address) as client:
        client.register_plugin(plugin)
        for command in ("data", "train", "extract", "transfer", "ahp"):
            scheduler = ["--scheduler", cluster.scheduler_address] if command in ("train", "extract", "transfer") \
                else []
            assert cli(config, run_dir, command, *scheduler) == 0, command
    assert marker.exists()  # a worker did die mid-extraction
    assert not (run_dir / "features.zarr").exists() and (run_dir / "affinity.csv").is_file()
    assert all(is_complete(StoreURL(url) / name) for name in ("data.zarr", "features.zarr", "transfers.zarr"))
    here, there = read_losses(reference), read_losses(run_dir)
    assert list(there.targets) == list(here.targets)
    for target, table in here.targets.items():
        assert there.targets[target].transfers == table.transfers
        np.testing.assert_array_equal(there.targets[target].losses, table.losses)  # bit for bit
    assert (run_dir / "affinity.csv").read_text() == (reference / "affinity.csv").read_text()
    assert RunFolder(run_dir).transfers == StoreURL(url) / "transfers.zarr"

    # a second run folder on the same prefix, while a command holds it: refused in one line, nothing made
    storage = load_config(config).storage
    acquire(run_dir, "taskonomy transfer", storage)
    try:
        capsys.readouterr()
        assert cli(config, tmp_path / "second", "data") == 2
        assert f"{url} is in use" in one_line(capsys) and not (tmp_path / "second").exists()
    finally:
        release(run_dir)
