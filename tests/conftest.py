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
