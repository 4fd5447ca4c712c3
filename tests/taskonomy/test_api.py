"""The Python API (taskonomy.open_run) on a real finished run, and the docs/ example that uses it."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

import taskonomy
from _faults import copy_run, snapshot
from conftest import ROOT
from taskonomy import TaskonomyError
from taskonomy.cli import main


@pytest.fixture()
def run_copy(faults_run, tmp_path):
    return copy_run(faults_run[1], tmp_path)


def test_reading_gives_labelled_arrays_and_writes_nothing(run_copy):
    before = snapshot(run_copy)
    run = taskonomy.open_run(run_copy)
    assert run.config.name == "faults" and run.config.data.image_size == 16  # the folder's own config
    affinity = run.affinity
    assert affinity.dims == ("target", "transfer") and "full" in affinity.transfer.values
    np.testing.assert_allclose(affinity.sum("transfer", skipna=True).values, 1, atol=1e-9)
    assert set(affinity.order.values) == {0, 1, 2}
    intervals = run.intervals
    assert set(intervals.data_vars) == {"affinity", "low", "high"}
    np.testing.assert_allclose(intervals.affinity.values, affinity.sel(target=intervals.target).values,
                               equal_nan=True, atol=1e-9)
    target = run.targets[0]
    losses = run.losses(target)
    store = zarr.open_group(str(run_copy / "transfers.zarr"), mode="r")
    np.testing.assert_array_equal(losses.values, store[target]["losses"][:])
    assert list(losses.image.values) == list(store.attrs["test_index"])
    assert set(run.quality.task.values) == {"depth_zbuffer", "normal", "class_scene"}
    assert snapshot(run_copy) == before


def test_solve_and_evaluate_return_what_the_cli_writes(run_copy):
    run = taskonomy.open_run(run_copy)
    solution = run.solve(budget=1, max_order=2)
    assert main(["-q", "--run-dir", str(run_copy), "solve", "--budget", "1", "--max-order", "2"]) == 0
    written = json.loads((run_copy / "taxonomy.json").read_text())
    assert list(solution.supervised) == written["supervised"]
    assert {t: tr.name for t, tr in solution.policy.items()} == {t: p["transfer"] for t, p in
                                                                   written["policy"].items()}
    points = run.evaluate(max_order=2)
    assert main(["-q", "--run-dir", str(run_copy), "evaluate", "--max-order", "2"]) == 0
    with (run_copy / "evaluation.csv").open() as handle:
        rows = {(float(r["budget"]), int(r["max_order"]), r["target"]): r["transfer"] for r in csv.DictReader(handle)}
    assert rows == {(p.budget, p.max_order, t): tr.name for p in points for t, tr in p.policy.items()}


def test_a_damaged_store_is_the_clis_one_line_error(run_copy):
    store = run_copy / "transfers.zarr"
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and "c" in p.relative_to(store).parts)
    chunk.write_bytes(chunk.read_bytes()[:-3] + b"bad")
    run = taskonomy.open_run(run_copy)
    with pytest.raises(TaskonomyError, match=r"transfers.zarr.*CRC32C.*taskonomy transfer --force") as caught:
        run.losses(chunk.relative_to(store).parts[0])  # the target whose losses the chunk holds
    assert "\n" not in str(caught.value)
    with pytest.raises(TaskonomyError, match="does not exist"):
        taskonomy.open_run(run_copy / "missing")


def test_reading_takes_no_lock_and_writing_waits_for_none(run_copy, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from taskonomy.lock import acquire; "
                               f"acquire({str(run_copy)!r}, 'a test'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        run = taskonomy.open_run(run_copy)
        assert run.affinity.shape[0] == len(run.targets)  # reading: no lock
        labels = np.zeros((24, 1), np.float32)
        with pytest.raises(TaskonomyError, match=f"in use by process {holder.pid}"):
            run.add_target("far_room", labels, loss="bce")
        assert not (run_copy / "added_targets.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_the_docs_example_runs(run_copy):
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "python_api.py"), str(run_copy), "--add"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "best single source per target" in out.stdout and "added target bright:" in out.stdout
    assert "bright" in taskonomy.open_run(run_copy).targets


def test_a_folder_of_the_published_results_reads_solves_and_evaluates(tmp_path):
    run_dir = tmp_path / "published"
    assert main(["-q", "--run-dir", str(run_dir), "published"]) == 0
    run = taskonomy.open_run(run_dir)
    assert run.published["images"] == "16k"
    assert len(run.targets) == 22 and "normal" in run.sources and "class_selected" in run.sources
    assert run.solve(budget=3, max_order=1).supervised == ("denoising", "edge_texture", "normal")
    [point] = run.evaluate(max_order=1, budgets=[3])  # scored by the release's win rates
    assert 0.5 < point.mean_gain < 1 and 0 < point.mean_quality < 0.5
    with pytest.raises(TaskonomyError, match="no per-image losses"):
        run.losses("normal")
