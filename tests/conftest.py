"""Shared fixtures: the tiny config and one tiny generated data set per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from taskonomy.config import load_config
from taskonomy.runtime import cap_threads

ROOT = Path(__file__).resolve().parents[1]
cap_threads(2)

# CI runs derandomised, so a failure is reproducible; locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=50)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def tiny_config():
    return load_config(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(scope="session")
def tiny_data(tiny_config, tmp_path_factory) -> Path:
    """A complete data.zarr made from configs/tiny.yaml (read-only for tests: copy before changing)."""
    from taskonomy.scenes.dataset import build_data

    path = tmp_path_factory.mktemp("tiny_run") / "data.zarr"
    assert build_data(tiny_config, path, progress=False) == "built"
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tiny_data, tmp_path_factory) -> Path:
    """A run folder of configs/tiny.yaml after `taskonomy train` and `taskonomy extract` (read-only: copy it).

    Every tiny task is trained with the config's own `train` section (about two minutes on 2 cores), once
    per session, for the stage I quality check and every later stage's tests.
    """
    import shutil

    from taskonomy.cli import main

    run_dir = tmp_path_factory.mktemp("tiny_trained") / "run"
    run_dir.mkdir()
    shutil.copytree(tiny_data, run_dir / "data.zarr")
    args = ["-q", "--config", str(ROOT / "configs" / "tiny.yaml"), "--run-dir", str(run_dir)]
    assert main([*args, "train"]) == 0 and main([*args, "extract"]) == 0
    return run_dir


@pytest.fixture(scope="session")
def faults_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run folder): every stage of the small fault-suite config (tests/_faults.py), run uninterrupted in
    this process: the reference that killed and resumed runs must equal (read-only: copy it)."""
    from _faults import cli, write_config

    folder = tmp_path_factory.mktemp("faults")
    config = write_config(folder)
    assert cli(config, folder / "run", "run") == 0
    cap_threads(2)  # the config runs on one thread; the rest of the suite expects two
    return config, folder / "run"


@pytest.fixture(scope="session")
def s3_storage():
    """A local S3 server for the session (moto's server mode on a free port; never a real cloud) and the
    environment s3fs reads, with fake credentials, restored after the session: yields a SimpleNamespace with
    `bucket`, `endpoint` and `url(name)` -> a fresh prefix s3://<bucket>/<name> for a test's stores
    (storage.url). Reusable by any test, also across processes a test starts (a LocalCluster's workers inherit
    the environment). Skipped where the test extra's s3fs and moto[server] are not installed."""
    import logging
    import socket
    from types import SimpleNamespace

    pytest.importorskip("s3fs")
    server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONFIG_FILE",
                     "AWS_SHARED_CREDENTIALS_FILE"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no credential lookup on a metadata service
        import s3fs

        bucket = "taskonomy-tests"
        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
        try:
            yield SimpleNamespace(bucket=bucket, endpoint=endpoint, url=lambda name: f"s3://{bucket}/{name}")
        finally:
            moto.stop()
