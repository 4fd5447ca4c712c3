"""`taskonomy train` and `taskonomy extract` as a user runs them, on the tiny data set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT
from taskonomy.cli import main
from taskonomy.extract.checkpoints import checkpoint_path, load_checkpoint, save_checkpoint
from taskonomy.extract.features import open_features
from taskonomy.extract.visualpriors import TaskonomyEncoder, save_taskonomy_checkpoint


@pytest.fixture(scope="module")
def quick_run(tiny_data, tmp_path_factory):
    """A run folder holding the tiny data, trained and extracted with a config of two tasks, one epoch."""
    tmp_path = tmp_path_factory.mktemp("quick")
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    torch.manual_seed(0)
    encoder_file = save_taskonomy_checkpoint(TaskonomyEncoder(), tmp_path, "rgb2sfnorm")
    config["train"] = {"tasks": ["normal", "class_scene"], "epochs": 1, "batch": 64, "width": 8, "feature_channels": 8}
    config["extract"] = {"taskonomy_encoders": {"tk_normal": str(encoder_file)}, "taskonomy_size": 32,
                         "chunk_images": 32}
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copytree(tiny_data, run_dir / "data.zarr")
    args = ["-q", "--config", str(tmp_path / "quick.yaml"), "--run-dir", str(run_dir)]
    assert main([*args, "train"]) == 0 and main([*args, "extract"]) == 0
    return args, run_dir


@pytest.fixture
def run_copy(quick_run, tmp_path):
    """A private copy of the trained run, for tests that change it."""
    args, run_dir = quick_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return [a if a != str(run_dir) else str(copy) for a in args], copy


def test_train_then_extract_fills_the_feature_cache(quick_run):
    args, run_dir = quick_run
    assert (run_dir / "stage1_quality.csv").read_text().splitlines()[0].startswith("task,")
    assert checkpoint_path(run_dir, "normal").is_file()
    root = open_features(run_dir / "features.zarr", ["normal", "class_scene", "random", "pixels", "tk_normal"])
    n_test = len(np.asarray(root["normal/test"]))
    assert root["normal/test"].shape == (n_test, 8, 4, 4) and root["normal/test"].dtype == np.float16
    assert root["pixels/test"].shape == (n_test, 3, 4, 4)
    assert root["tk_normal/test"].shape == (n_test, 8, 2, 2)  # ResNet-50 trunk: input / 16
    assert root["random/views/egomotion/transfer"].shape[1:] == (8, 4, 4)
    trained, untrained = root["normal/test"][:].astype(np.float32), root["random/test"][:].astype(np.float32)
    assert np.isfinite(trained).all() and not np.allclose(trained, untrained)


def test_second_runs_are_up_to_date_and_a_changed_encoder_is_recomputed(run_copy, capsys):
    args, run_dir = run_copy
    before = open_features(run_dir / "features.zarr")["class_scene/test"][:]
    stamp = load_checkpoint(checkpoint_path(run_dir, "normal"))["hash"]

    loud = [a for a in args if a != "-q"]
    capsys.readouterr()
    assert main([*loud, "train"]) == 0
    assert capsys.readouterr().err.count("up to date") == 2
    assert main([*loud, "extract"]) == 0
    assert capsys.readouterr().err.count("up to date") == 5

    payload = load_checkpoint(checkpoint_path(run_dir, "normal"))  # new weights under the same stamp
    payload["state_dict"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
    save_checkpoint(checkpoint_path(run_dir, "normal"), payload)
    assert main([*loud, "extract"]) == 0
    err = capsys.readouterr().err
    assert "normal             extracted" in err and err.count("up to date") == 4
    assert payload["hash"] == stamp
    np.testing.assert_array_equal(open_features(run_dir / "features.zarr")["class_scene/test"][:], before)


def test_a_corrupt_checkpoint_is_a_one_line_error(run_copy, capsys):
    args, run_dir = run_copy
    path = checkpoint_path(run_dir, "normal")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capsys.readouterr()
    assert main([*args, "extract"]) == 2
    err = capsys.readouterr().err.strip()
    assert "normal.pt" in err and len(err.splitlines()) == 1
