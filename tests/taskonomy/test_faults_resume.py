"""Kill and resume at every stage (docs/faults.md): a child process runs a stage of the small fault-suite config
and SIGKILLs itself at a chosen call (after some chunks, some tasks or targets, between two output files); the
same command run again must finish with what the uninterrupted reference run made: the same bytes for data and
features, the same weights and losses, affinities, taxonomy and evaluation.

The other kill tests: tests/scenes/test_dataset.py (data, a SIGKILL and a half-written chunk), test_features.py
(extraction interrupted after a chunk written but not recorded), test_transfer.py (transfer killed after the
first order on the tiny config).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from _faults import cli, copy_run, killed, snapshot, store_bytes
from taskonomy.extract.checkpoints import load_checkpoint

TIMINGS = ("seconds", "images_per_s")  # measured, not computed: the only things a resumed run may change


def _checkpoints(run_dir: Path) -> dict[str, dict]:
    return {p.stem: load_checkpoint(p) for p in sorted((run_dir / "models").glob("*.pt"))}


def _quality(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "stage1_quality.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(handle)]


def same_training(run_dir: Path, reference: Path) -> None:
    got, expected = _checkpoints(run_dir), _checkpoints(reference)
    assert sorted(got) == sorted(expected)
    for task, payload in expected.items():
        other = got[task]
        assert other["hash"] == payload["hash"] and other["epoch_losses"] == payload["epoch_losses"], task
        for name, tensor in payload["state_dict"].items():
            assert torch.equal(other["state_dict"][name], tensor), (task, name)
        assert torch.equal(other["test_losses"], payload["test_losses"]), task
        assert {k: v for k, v in other["quality"].items() if k not in TIMINGS} == \
               {k: v for k, v in payload["quality"].items() if k not in TIMINGS}
    assert _quality(run_dir) == _quality(reference)


def same_transfers(run_dir: Path, reference: Path) -> None:
    got, expected = (zarr.open_group(str(r / "transfers.zarr"), mode="r") for r in (run_dir, reference))
    assert got.attrs["complete"] and got.attrs["targets"] == expected.attrs["targets"]
    for target in expected.attrs["targets"]:
        assert got[target].attrs["transfers"] == expected[target].attrs["transfers"]
        np.testing.assert_array_equal(got[target]["losses"][:], expected[target]["losses"][:])


def same_files(*names: str):
    def check(run_dir: Path, reference: Path) -> None:
        for name in names:
            assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    return check


def same_taxonomy(run_dir: Path, reference: Path) -> None:
    got, expected = (json.loads((r / "taxonomy.json").read_text()) for r in (run_dir, reference))
    assert got.pop("seconds") >= 0 and expected.pop("seconds") >= 0  # the solver's wall time
    assert got == expected and (run_dir / "taxonomy_graph.png").is_file()


def not_complete(store: str):
    return lambda run_dir: not zarr.open_group(str(run_dir / store), mode="r").attrs.get("complete")


def missing(*names: str):
    return lambda run_dir: not any((run_dir / name).exists() for name in names)


AHP_OUTPUTS = ("affinity.csv", "affinity_first_order.csv", "affinity_ci.csv", "ahp_summary.csv", "ahp.json")
EVALUATION = ("evaluation.csv", "supervision_saved.csv", "supervision_saved.json")
slow = pytest.mark.slow

# stage: (command, outputs removed from the copy first, function whose n-th call dies, n, before or after it,
#         how the killed run must look, how the resumed run must equal the reference)
STAGES = {
    "train-after-one-task": (["train"], ("models", "stage1_quality.csv"), "taskonomy.extract.pipeline:save_checkpoint",
                             2, "before", lambda r: (r / "models/depth_zbuffer.pt").is_file()
                             and missing("models/normal.pt", "stage1_quality.csv")(r), same_training),
    "extract-mid-source": (["extract"], ("features.zarr",), "taskonomy.extract.features:_write_chunk", 14, "after",
                           not_complete("features.zarr"),
                           lambda r, ref: store_bytes(r / "features.zarr") == store_bytes(ref / "features.zarr")),
    "ahp-between-outputs": (["ahp", "--force"], (), "taskonomy.runfolder:_atomic", 2, "after", missing("ahp.json"),
                            same_files(*AHP_OUTPUTS)),
    "data-mid-chunk": (["data"], ("data.zarr",), "zarr:Array.__setitem__", 9, "after", not_complete("data.zarr"),
                       lambda r, ref: store_bytes(r / "data.zarr") == store_bytes(ref / "data.zarr")),
    "transfer-between-targets": (["transfer"], ("transfers.zarr",), "taskonomy.transfer.stage:_write_target", 2,
                                 "after", not_complete("transfers.zarr"), same_transfers),
    "solve-between-outputs": (["solve"], ("taxonomy.json", "taxonomy_graph.png"),
                              "taskonomy.runfolder:_atomic", 1, "after", missing("taxonomy_graph.png"),
                              same_taxonomy),
    "evaluate-between-outputs": (["evaluate"], EVALUATION + ("evaluation_curves.png",),
                                 "taskonomy.runfolder:_atomic", 2, "after",
                                 missing("supervision_saved.json", "evaluation_curves.png"), same_files(*EVALUATION)),
}
# the default suite kills these; the rest: -m slow
DEFAULT = ("train-after-one-task", "extract-mid-source", "transfer-between-targets", "ahp-between-outputs")


@pytest.mark.parametrize("stage", [s if s in DEFAULT else pytest.param(s, marks=slow) for s in STAGES])
def test_a_stage_killed_midway_resumes_to_the_uninterrupted_result(faults_run, tmp_path, stage):
    command, drop, function, n, when, unfinished, same = STAGES[stage]
    config, reference = faults_run
    copy = copy_run(reference, tmp_path, *drop)
    killed(config, copy, command, function, n, when)
    assert unfinished(copy), "the killed run must leave its output unfinished, not looking complete"
    assert cli(config, copy, command[0]) == 0  # the same command again, without --force
    assert same(copy, reference) is not False


@slow
def test_add_target_killed_before_its_rows_are_written_resumes_to_the_same_rows(faults_run, tmp_path):
    config, reference = faults_run
    labels = tmp_path / "bright.npy"
    data = zarr.open_group(str(reference / "data.zarr"), mode="r")
    np.save(labels, (data["images/rgb"][:].mean(axis=(1, 2, 3)) > 110).astype(np.float32)[:, None])
    command = ["add-target", "bright_view", "--labels", str(labels), "--loss", "bce"]
    whole = copy_run(reference, tmp_path / "whole")
    assert cli(config, whole, *command) == 0
    copy = copy_run(reference, tmp_path / "killed")
    before = snapshot(copy)
    killed(config, copy, command, "taskonomy.transfer.stage:_write_target", 1, "before")
    after = snapshot(copy)
    # readouts trained, none written: no target's rows changed, the store marked incomplete (readers refuse it
    # until a command finishes it); the target's entry, labels and network are kept
    root = "transfers.zarr/zarr.json"
    assert {k: v for k, v in after.items() if k.startswith("transfers.zarr") and k != root} == \
        {k: v for k, v in before.items() if k.startswith("transfers.zarr") and k != root}
    assert json.loads(after[root])["attributes"]["complete"] is False
    assert {"added_targets.json", "added_targets/bright_view.npy", "models/bright_view.pt"} <= set(after) - set(before)
    assert cli(config, copy, *command) == 0  # the same command again finishes it
    same_transfers(copy, whole)
    assert (copy / "added_targets.json").read_bytes() == (whole / "added_targets.json").read_bytes()
