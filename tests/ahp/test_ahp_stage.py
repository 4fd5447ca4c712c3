"""`taskonomy ahp` on a synthetic transfers.zarr written the way stage II writes it."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import ROOT
from taskonomy import TaskonomyWarning
from taskonomy.ahp.stage import OUTPUTS, order_transfers
from taskonomy.cli import main

TARGETS = ["edge_texture", "depth_zbuffer", "normal", "reshading", "class_scene"]
SOURCES = ["autoencoding", "edge_texture", "depth_zbuffer", "normal", "reshading", "class_scene", "random", "pixels"]
GEOMETRY = {"depth_zbuffer", "normal", "reshading"}


def write_transfers(path: Path, n_test: int = 96, seed: int = 0, incomplete: str | None = None,
                    complete: bool = True, poison: tuple[str, str] | None = None) -> Path:
    """A transfers.zarr in stage II's format: geometry sources help geometry targets, controls help nobody."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(str(path), mode="w")
    difficulty = rng.gamma(4.0, 0.25, n_test)  # some test images are hard for every transfer
    for target in TARGETS:
        firsts = [s for s in SOURCES if s != target]
        seconds = ["+".join(sorted(pair)) for pair in (firsts[1:3], firsts[2:4])]
        names = ["scratch", "full", *firsts, *seconds]
        orders = [0, 0] + [1] * len(firsts) + [2] * len(seconds)
        quality = {"full": 0.6, "scratch": 1.6, "random": 1.8, "pixels": 1.7}
        for s in firsts:
            if s not in quality:
                quality[s] = 0.9 if (s in GEOMETRY) == (target in GEOMETRY) else 1.3
        for s in seconds:
            quality[s] = min(quality[p] for p in s.split("+")) - 0.05
        noise = rng.lognormal(0.0, 0.3, (len(names), n_test))
        losses = (np.array([quality[n] for n in names])[:, None] * difficulty * noise).astype(np.float32)
        group = root.create_group(target)
        array = group.create_array("losses", shape=losses.shape, dtype="float64", chunks=losses.shape)
        array[...] = losses.astype(np.float64)  # float32 networks' losses, stored as float64
        if poison and poison[0] == target:
            array[names.index(poison[1]), 5] = np.nan
        group.attrs.update({"transfers": names, "orders": orders, "complete": target != incomplete})
    root.attrs.update({"complete": complete, "targets": TARGETS, "sources": SOURCES,
                       "test_index": list(range(1000, 1000 + n_test)),
                       "loss": {t: "l1" for t in TARGETS}})
    return path


def ahp(run_dir: Path, *extra: str, config: str = "configs/tiny.yaml") -> int:
    return main(["-q", "--config", str(ROOT / config), "--run-dir", str(run_dir), "ahp", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def done_run(tmp_path_factory) -> Path:
    """A run folder after one `taskonomy ahp` (read-only for tests: copy before changing)."""
    run_dir = tmp_path_factory.mktemp("ahp_run")
    write_transfers(run_dir / "transfers.zarr")
    assert ahp(run_dir) == 0
    return run_dir


def test_outputs_exist_and_affinity_rows_sum_to_one(done_run):
    for name in (*OUTPUTS, "ahp.json"):
        assert (done_run / name).stat().st_size > 0, name
    rows = read_csv(done_run / "affinity.csv")
    assert [r["target"] for r in rows] == TARGETS
    header = list(rows[0])
    assert header[:2] == ["target", "full"] and header[-1] == "scratch"
    firsts = [c for c in header[2:-1] if "+" not in c]
    assert firsts == SOURCES  # registry order, controls last
    assert all("+" in c for c in header[2 + len(firsts):-1])
    for row in rows:
        values = [float(v) for k, v in row.items() if k != "target" and v]
        assert sum(values) == pytest.approx(1.0, abs=1e-9) and all(0 < v < 1 for v in values)
        assert row[row["target"]] == ""  # a target is not its own first-order source here


def test_affinities_follow_the_losses(done_run):
    rows = {r["target"]: r for r in read_csv(done_run / "affinity.csv")}
    normal = rows["normal"]
    assert float(normal["full"]) > float(normal["depth_zbuffer"]) > float(normal["edge_texture"])
    assert float(normal["depth_zbuffer"]) > float(normal["random"]) and float(normal["scratch"]) < float(normal["full"])
    summary = {r["target"]: r for r in read_csv(done_run / "ahp_summary.csv")}
    assert summary["normal"]["top_source"] in GEOMETRY and summary["class_scene"]["top_source"] not in GEOMETRY
    assert all(r["converged"] == "True" and 0 <= float(r["top_source_stability"]) <= 1 for r in summary.values())
    assert all(float(r["consistency_ratio"]) >= 0 for r in summary.values())


def test_first_order_file_and_intervals(done_run):
    first = read_csv(done_run / "affinity_first_order.csv")
    full = {r["target"]: r for r in read_csv(done_run / "affinity.csv")}
    assert list(first[0]) == ["target", *SOURCES]
    for row in first:  # the same numbers as affinity.csv, not renormalised
        assert all(row[s] == full[row["target"]][s] for s in SOURCES)
    ci = read_csv(done_run / "affinity_ci.csv")
    assert len(ci) == sum(len([c for c in full[t] if c != "target" and full[t][c]]) for t in TARGETS)
    for row in ci:
        assert float(row["low"]) <= float(row["affinity"]) + 1e-12 <= float(row["high"]) + 2e-12
        assert row["affinity"] == full[row["target"]][row["transfer"]]


def test_skipped_when_up_to_date_and_force_redoes_it(done_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name in (*OUTPUTS, "ahp.json"):
        (run_dir / name).write_bytes((done_run / name).read_bytes())
    write_transfers(run_dir / "transfers.zarr")
    before = {n: (run_dir / n).stat().st_mtime_ns for n in OUTPUTS}
    assert main(["--config", str(ROOT / "configs/tiny.yaml"), "--run-dir", str(run_dir), "ahp"]) == 0
    assert "up to date" in capsys.readouterr().err
    assert before == {n: (run_dir / n).stat().st_mtime_ns for n in OUTPUTS}
    assert ahp(run_dir, "--force") == 0
    assert all((run_dir / n).stat().st_mtime_ns > before[n] for n in OUTPUTS)
    assert (run_dir / "affinity.csv").read_text() == (done_run / "affinity.csv").read_text()  # deterministic
    write_transfers(run_dir / "transfers.zarr", seed=1)  # new losses: redone without --force
    assert ahp(run_dir) == 0
    assert (run_dir / "affinity.csv").read_text() != (done_run / "affinity.csv").read_text()
    assert json.loads((run_dir / "ahp.json").read_text())["targets"] == TARGETS


@pytest.mark.parametrize("setup,expected", [
    ("missing", "does not exist; run `taskonomy transfer` first"),
    ("incomplete", "is incomplete (a run was interrupted); run `taskonomy transfer`"),
    ("nan", "target normal: transfer pixels has NaN/inf test losses (1 of 96 images)"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, setup, expected):
    if setup != "missing":
        write_transfers(tmp_path / "transfers.zarr", complete=setup != "incomplete",
                        poison=("normal", "pixels") if setup == "nan" else None)
    assert ahp(tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "affinity.csv").exists()


def test_incomplete_target_is_left_out_with_a_warning(tmp_path):
    write_transfers(tmp_path / "transfers.zarr", incomplete="reshading")
    with pytest.warns(TaskonomyWarning, match="target reshading is not complete"):
        assert ahp(tmp_path) == 0
    assert [r["target"] for r in read_csv(tmp_path / "affinity.csv")] == [t for t in TARGETS if t != "reshading"]


def test_bootstrap_can_be_disabled(tmp_path):
    config = tmp_path / "noboot.yaml"
    config.write_text((ROOT / "configs/tiny.yaml").read_text() + "ahp: {resamples: 0}\n")
    write_transfers(tmp_path / "transfers.zarr", n_test=20)
    assert ahp(tmp_path, config=str(config)) == 0
    ci = read_csv(tmp_path / "affinity_ci.csv")
    assert all(r["low"] == "" and r["high"] == "" for r in ci)
    assert all(r["top_source_stability"] == "" and r["top_source"] for r in read_csv(tmp_path / "ahp_summary.csv"))


def test_column_order():
    names = {"scratch", "full", "pixels", "normal", "depth_zbuffer", "normal+reshading", "depth_zbuffer+normal",
             "custom_enc", "autoencoding+depth_zbuffer+normal"}
    assert order_transfers(names, ["custom_enc", "normal"]) == [
        "full", "depth_zbuffer", "normal", "pixels", "custom_enc", "depth_zbuffer+normal", "normal+reshading",
        "autoencoding+depth_zbuffer+normal", "scratch"]


def test_heatmap_is_a_png(done_run):
    data = (done_run / "affinity_heatmap.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert not any(name.startswith(".") and name.endswith(".tmp") for name in os.listdir(done_run))
