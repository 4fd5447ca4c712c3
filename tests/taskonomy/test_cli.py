"""The `taskonomy` command as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from taskonomy.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taskonomy", *args], capture_output=True, text=True, cwd=ROOT)


def test_python_dash_m_and_help():
    result = run("--help")
    assert result.returncode == 0 and "data" in result.stdout


def test_data_on_tiny_config_writes_a_complete_store_and_saves_the_config(tmp_path):
    small = ("--config", "configs/tiny.yaml", "--set", "data.n_scenes=16")  # 64 images: the CLI, not the renderer
    result = run(*small, "--run-dir", str(tmp_path / "run"), "data")
    assert result.returncode == 0, result.stderr
    assert "built" in result.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["name"] == "tiny" and saved["data"]["image_size"] == 32 and saved["data"]["n_scenes"] == 16
    again = run(*small, "--run-dir", str(tmp_path / "run"), "data")
    assert again.returncode == 0 and "up to date" in again.stderr
    # without --config the folder's own config.yaml is the config (not the built-in defaults), and stays as it is
    before = (tmp_path / "run" / "config.yaml").read_bytes()
    bare = run("--run-dir", str(tmp_path / "run"), "data")
    assert bare.returncode == 0 and "up to date" in bare.stderr, bare.stderr
    assert (tmp_path / "run" / "config.yaml").read_bytes() == before
    assert (tmp_path / "run" / "run.json").read_text() == '{\n  "format": 1\n}\n'


@pytest.mark.parametrize("args,expected", [
    (["--config", "missing.yaml", "data"], "cannot read config missing.yaml"),
    (["--run-dir", "{file}/sub", "data"], "cannot write run folder"),
    (["data", "--bogus"], "No such option"),
    (["--run-dir", "{tmp}/new", "--set", "data.image_size=12", "data"], "--set data.image_size=12: data.image_size"),
    (["--run-dir", "{tmp}/new", "--set", "data.imagesize=32", "data"], "unknown key 'data.imagesize'"),
    (["--run-dir", "{tmp}/new", "solve"], "run folder {tmp}/new does not exist; make it with `taskonomy --config"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, args, expected):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    args = [a.replace("{file}", str(blocker)).replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert expected.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


def test_mismatched_existing_store_is_refused(tmp_path, capsys):
    small = tmp_path / "small.yaml"
    small.write_text("data: {image_size: 16, n_scenes: 4, views_per_scene: 1, tasks: [depth_zbuffer]}\n")
    run_dir = str(tmp_path / "run")
    assert main(["-q", "--config", str(small), "--run-dir", run_dir, "data"]) == 0
    small.write_text("data: {image_size: 16, n_scenes: 5, views_per_scene: 1, tasks: [depth_zbuffer]}\n")
    capsys.readouterr()
    assert main(["-q", "--config", str(small), "--run-dir", run_dir, "data"]) == 2
    err = capsys.readouterr().err.strip()
    assert "another config" in err and "--force" in err and len(err.splitlines()) == 1
    assert main(["-q", "--config", str(small), "--run-dir", run_dir, "data", "--force"]) == 0
