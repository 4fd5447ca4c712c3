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
