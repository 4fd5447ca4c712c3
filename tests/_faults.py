"""Helpers of the fault suite (test_faults.py, test_faults_resume.py): a small config, private copies of its
complete run folder, the CLI as a user runs it, and a child process that SIGKILLs itself at a chosen call."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from conftest import ROOT
from taskonomy.cli import main

# 16 px, 3 tasks (one per head kind: dense l1, dense normals, global ce), 24 images in chunks of 4, one epoch:
# every stage in about 10 s on one thread; one thread because 2 threads on 2 loaded cores train 2x slower
SMALL = {
    "name": "faults", "seed": 1, "threads": 1,
    "data": {"image_size": 16, "n_scenes": 8, "views_per_scene": 3, "max_objects": 3,
             "tasks": ["depth_zbuffer", "normal", "class_scene"], "splits": {"test": 0.25, "transfer": 0.5},
             "chunk_images": 4, "batch": 4},
    "train": {"epochs": 1, "batch": 8, "width": 4, "feature_channels": 4},
    "extract": {"chunk_images": 4},
    "transfer": {"epochs": 1, "max_order": 2, "beam": 2, "hidden": 4},
    "ahp": {"resamples": 10},
    "taxonomy": {"budget": 1, "max_order": 2, "time_limit": 10},
}


def write_config(folder: Path, name: str = "faults.yaml", **sections) -> Path:
    """SMALL with `sections` merged in (one level deep), as a YAML file in `folder`."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def cli(config: Path, run_dir: Path, *args: str) -> int:
    """`taskonomy -q --config CONFIG --run-dir RUN_DIR ARGS` in this process; its exit status."""
    return main(["-q", "--config", str(config), "--run-dir", str(run_dir), *args])


def copy_run(reference: Path, tmp_path: Path, *drop: str) -> Path:
    """A private copy of the reference run folder without the entries `drop` (names in the folder)."""
    copy = tmp_path / "run"
    shutil.copytree(reference, copy, ignore=lambda folder, names: [n for n in names if Path(folder) == reference
                                                                   and n in drop])
    return copy


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a store (or any folder) and its bytes, by relative path."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of a run folder and its bytes, but the lock (every command writes its PID there)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def one_line(capsys) -> str:
    """The command's stderr, asserted to be exactly one line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("taskonomy: error: "), err
    return err.strip()


# The child imports the module that owns `function`, wraps it so that its n-th call SIGKILLs the process
# (before or after the real call), then runs the CLI: a kill at a chosen point with no hook in the code.
_KILLER = """
import importlib, os, signal, sys
module, function, n, when = sys.argv[1:5]
owner = importlib.import_module(module)
*path, name = function.split(".")
for part in path:
    owner = getattr(owner, part)
real, calls = getattr(owner, name), []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(n) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    out = real(*args, **kwargs)
    if len(calls) == int(n) and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(owner, name, dying)
from taskonomy.cli import main
sys.exit(main(sys.argv[5:]))
"""


def killed(config: Path, run_dir: Path, command: list[str], function: str, n: int, when: str = "after") -> None:
    """Run `taskonomy COMMAND` in a child that SIGKILLs itself at the n-th call of `function`
    ("package.module:name" or "package.module:Class.method"); asserts that it died by SIGKILL."""
    module, name = function.split(":")
    args = ["-q", "--config", str(config), "--run-dir", str(run_dir), *command]
    result = subprocess.run([sys.executable, "-c", _KILLER, module, name, str(n), when, *args], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}, timeout=300)
    assert result.returncode == -9, f"not killed (exit {result.returncode}): {result.stderr[-2000:]}"


try:  # the optional cluster extra: only the cluster tests use DiesOnce
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # pragma: no cover
    _WorkerPlugin = object


class DiesOnce(_WorkerPlugin):
    """A dask WorkerPlugin: in every worker process, the n-th call of `function` ("package.module:name") whose
    first argument's repr contains `match` ends that process (os._exit, before the real call), once across the
    cluster: the first process to get there creates `marker`; every later call (a restarted worker's too) runs
    as usual. A worker dying mid-job with no hook in the code."""

    name = "taskonomy-dies-once"

    def __init__(self, marker: Path, function: str, n: int = 1, match: str = "") -> None:
        self.marker, self.function, self.n, self.match = str(marker), function, n, match

    def setup(self, worker) -> None:
        import importlib

        module, name = self.function.split(":")
        owner = importlib.import_module(module)
        real, calls, marker, n, match = getattr(owner, name), [], self.marker, self.n, self.match

        def dying(*args, **kwargs):
            if args and match in repr(args[0]):
                calls.append(1)
                if len(calls) == n:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        return real(*args, **kwargs)
                    os._exit(1)
            return real(*args, **kwargs)

        setattr(owner, name, dying)
