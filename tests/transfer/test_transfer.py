"""Stage II: grouped readouts, the Dask feed, beam search, transfers.zarr, resume, a cluster, add-target."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from conftest import ROOT
from taskonomy import TaskonomyError
from taskonomy import tasks as registry
from taskonomy.cli import main
from taskonomy.transfer.feed import FeatureFeed, channel_stats
from taskonomy.transfer.readouts import build_readouts
from taskonomy.transfer.stage import beam_transfers, transfer_name

TARGETS = ["normal", "class_scene", "egomotion"]


@pytest.fixture(autouse=True)
def _registry_untouched():
    """Targets added from the cache live in the run folder, never in the process-wide task dictionary."""
    before = [t.name for t in registry.all_tasks()]
    yield
    assert [t.name for t in registry.all_tasks()] == before


@pytest.mark.parametrize("name", ["normal", "class_scene", "egomotion", "segment_semantic"])
def test_grouped_readouts_equal_the_same_readouts_built_alone(name):
    task = registry.get(name)
    widths, seeds = [16, 3, 8], [11, 12, 13]
    grouped = build_readouts(task, 3, 16, 4, 32)
    grouped.reset(seeds, widths)
    z = torch.randn(5, 3, 16, 4, 4)
    for g, width in enumerate(widths):
        z[:, g, width:] = 0  # zero padding, as the trainer pads narrower inputs
    out = grouped(z)
    for g, (seed, width) in enumerate(zip(seeds, widths)):
        alone = build_readouts(task, 1, width, 4, 32)
        alone.reset([seed], [width])
        torch.testing.assert_close(out[:, g], alone(z[:, g:g + 1, :width])[:, 0], rtol=1e-5, atol=1e-5)


def test_beam_search_follows_the_paper():
    ranked = ["a", "b", "c", "d", "e", "f", "g"]
    assert beam_transfers(ranked, 1) == []
    pairs = beam_transfers(ranked, 2)
    assert len(pairs) == 10 and all(set(p) <= set("abcde") for p in pairs)
    assert len(beam_transfers(ranked, 3)) == 10 + 10
    assert beam_transfers(ranked, 6)[-1] == ("a", "b", "c", "d", "e", "f")  # past the beam: the top k only
    assert beam_transfers(["b", "a"], 3) == [("a", "b")]
    assert transfer_name(("normal", "depth_zbuffer")) == "depth_zbuffer+normal"


def test_feed_reads_chunk_aligned_blocks_and_stats_match_numpy(tmp_path):
    root = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
    values = np.random.default_rng(0).normal(2.0, 3.0, (70, 4, 2, 2)).astype(np.float16)
    for name, chunk in (("a/transfer", 32), ("b/transfer", 16)):
        root.create_array(name, shape=values.shape, chunks=(chunk, 4, 2, 2), dtype="float16")[...] = values
    feed = FeatureFeed(root, ["a/transfer", "b/transfer"])
    assert feed.bounds == [(0, 32), (32, 64), (64, 70)]
    got = {lo: block for lo, hi, block in feed.blocks([2, 0, 1])}
    assert sorted(got) == [0, 32, 64]
    np.testing.assert_array_equal(got[32]["b/transfer"], values[32:64].astype(np.float32))
    mean, std = channel_stats(root, ["a/transfer"])["a/transfer"]
    np.testing.assert_allclose(mean, values.astype(np.float64).mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, values.astype(np.float64).std(axis=(0, 2, 3)), rtol=1e-9)
    with pytest.raises(TaskonomyError, match="no 'c/transfer'"):
        FeatureFeed(root, ["c/transfer"])


def _config(tmp_path, **transfer) -> str:
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["transfer"] = {"epochs": 3, "batch": 64, "lr": 2e-3, "targets": TARGETS, "max_order": 2, **transfer}
    path = tmp_path / "stage2.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def transferred(tiny_run, tmp_path_factory):
    """A copy of the trained tiny run after `taskonomy transfer` on three targets, orders 1 and 2."""
    tmp = tmp_path_factory.mktemp("stage2")
    run_dir = tmp / "run"
    shutil.copytree(tiny_run, run_dir)
    args = ["-q", "--config", _config(tmp), "--run-dir", str(run_dir)]
    assert main([*args, "transfer"]) == 0
    return args, run_dir


def _copy(transferred, tmp_path, *ignore: str, quiet: bool = True) -> tuple[list[str], Path]:
    """A private copy of the transferred run (without `ignore`d entries) and CLI args pointing at it."""
    args, run_dir = transferred
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    return [a if a != str(run_dir) else str(copy) for a in args if quiet or a != "-q"], copy


def _losses(run_dir) -> dict[str, tuple[list[str], np.ndarray]]:
    store = zarr.open_group(str(run_dir / "transfers.zarr"), mode="r")
    return {t: (list(store[t].attrs["transfers"]), store[t]["losses"][:]) for t in store.attrs["targets"]}


def test_transfers_zarr_holds_every_transfer_of_every_target(transferred):
    _, run_dir = transferred
    store = zarr.open_group(str(run_dir / "transfers.zarr"), mode="r")
    assert store.attrs["complete"] and store.attrs["targets"] == TARGETS
    sources = store.attrs["sources"]
    assert "random" in sources and "pixels" in sources
    n_test = len(store.attrs["test_index"])
    for target, (names, losses) in _losses(run_dir).items():
        first = [n for n in names if n in sources]
        assert names[0] == "full" and names[-1] == "scratch"
        assert sorted(first) == sorted(s for s in sources if s != target)
        assert sum("+" in n for n in names) == 10  # pairs of the 5 best first-order sources
        assert losses.shape == (len(names), n_test) and np.isfinite(losses).all()
        assert store[target].attrs["complete"] and store[target].attrs["orders"][names.index(names[-2])] == 2
        # the cached features carry information: the best source beats the untrained-encoder control
        mean = dict(zip(names, losses.mean(axis=1)))
        assert min(mean[s] for s in first) < mean["random"], target


def test_a_second_run_is_up_to_date_and_a_new_order_trains_only_what_is_new(transferred, tmp_path, capsys):
    args, copy = _copy(transferred, tmp_path, quiet=False)
    before = _losses(copy)
    assert main([*args, "transfer"]) == 0
    assert capsys.readouterr().err.count("up to date") == len(TARGETS)
    config = [a for a in args if a.endswith(".yaml")][0]
    assert main([*args[:1], _config(tmp_path, max_order=3), *args[2:], "transfer"]) == 0
    err = capsys.readouterr().err
    assert err.count("10 transfers trained") == len(TARGETS), err  # the ten triples, nothing else
    after = _losses(copy)
    for target, (names, losses) in before.items():
        new_names, new_losses = after[target]
        for name, row in zip(names, losses):
            np.testing.assert_array_equal(new_losses[new_names.index(name)], row)
    assert config


@pytest.mark.slow  # 43 s on 2 cores; the default suite kills transfer between targets (test_faults_resume)
def test_training_is_deterministic_and_a_killed_run_resumes(transferred, tmp_path):
    run_dir = transferred[1]
    args, copy = _copy(transferred, tmp_path, "transfers.zarr")
    command = [sys.executable, "-m", "taskonomy", *args, "transfer"]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONHASHSEED": "0"})
    marker = copy / "transfers.zarr" / TARGETS[-1] / "zarr.json"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not zarr.open_group(str(copy / "transfers.zarr"), mode="r").attrs["complete"]
    assert main([*args, "transfer"]) == 0
    expected, got = _losses(run_dir), _losses(copy)
    for target, (names, losses) in expected.items():
        assert got[target][0] == names
        np.testing.assert_array_equal(got[target][1], losses)  # scratch included: CPU training is deterministic


def test_a_dask_cluster_gives_the_same_losses(transferred, tmp_path):
    from distributed import LocalCluster

    run_dir = transferred[1]
    args, copy = _copy(transferred, tmp_path, "transfers.zarr")
    config = yaml.safe_load(open([a for a in args if a.endswith(".yaml")][0]))
    config["transfer"]["scratch"] = False
    (tmp_path / "nos.yaml").write_text(yaml.safe_dump(config))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        code = main(["-q", "--config", str(tmp_path / "nos.yaml"), "--run-dir", str(copy), "transfer",
                     "--scheduler", cluster.scheduler_address])
    assert code == 0
    expected, got = _losses(run_dir), _losses(copy)
    for target, (names, losses) in got.items():
        reference = expected[target]
        for name, row in zip(names, losses):
            np.testing.assert_array_equal(row, reference[1][reference[0].index(name)])


def test_add_target_trains_from_the_cache_without_running_an_encoder(transferred, tmp_path, monkeypatch, capsys):
    from taskonomy.artifacts import read_added_targets
    from taskonomy.extract import features, pipeline, visualpriors

    args, copy = _copy(transferred, tmp_path)

    def refuse(*_args, **_kwargs):
        raise AssertionError("a frozen encoder ran")

    # its own network (full) and scratch train on images, as every target's do; no frozen encoder runs again
    monkeypatch.setattr(features, "extract_features", refuse)
    monkeypatch.setattr(pipeline, "build_sources", refuse)
    monkeypatch.setattr(visualpriors.TaskonomyEncoder, "forward", refuse)
    data = zarr.open_group(str(copy / "data.zarr"), mode="r")
    depth = data["labels/depth_zbuffer"][:].astype(np.float32).mean(axis=(1, 2, 3))
    labels = (depth > np.median(depth)).astype(np.float32)[:, None]  # is the view deep or shallow?
    np.save(tmp_path / "deep.npy", labels)
    assert main([*args, "add-target", "deep_view", "--labels", str(tmp_path / "deep.npy"), "--loss", "bce"]) == 0
    store = zarr.open_group(str(copy / "transfers.zarr"), mode="r")
    assert store.attrs["targets"][-1] == "deep_view"
    assert [a.task.name for a in read_added_targets(copy)] == ["deep_view"]
    names, losses = list(store["deep_view"].attrs["transfers"]), store["deep_view"]["losses"][:]
    assert names[0] == "full" and names[-1] == "scratch" and len(names) == len(store.attrs["sources"]) + 10 + 2
    mean = dict(zip(names, losses.mean(axis=1)))
    assert mean["depth_zbuffer"] < mean["random"]  # depth features know how deep the view is
    assert (copy / "added_targets" / "deep_view.npy").is_file()

    # bad labels: one line, exit 2, nothing written
    before = sorted(p.name for p in copy.rglob("*"))
    capsys.readouterr()
    for bad, loss, message in ((labels[:10], "bce", "have 10 rows"), (labels * np.nan, "l2", "NaN or inf"),
                               (labels, "huber", "unknown loss"), (labels, "ce", "class indices"),
                               (labels * 3, "bce", r"\[0, 1\]")):
        np.save(tmp_path / "bad.npy", bad)
        assert main([*args, "add-target", "other", "--labels", str(tmp_path / "bad.npy"), "--loss", loss]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and __import__("re").search(message, err), err
    for name, loss in (("normal", "bce"), ("deep_view", "l2"), ("Bad/Name", "bce")):  # deep_view: another loss
        assert main([*args, "add-target", name, "--labels", str(tmp_path / "deep.npy"), "--loss", loss]) == 2
    assert sorted(p.name for p in copy.rglob("*")) == before


def test_add_target_python_api_with_a_label_function(transferred, tmp_path):
    from taskonomy.config import load_config
    from taskonomy.transfer.add_target import add_target

    args, copy = _copy(transferred, tmp_path)
    config = load_config([a for a in args if a.endswith(".yaml")][0])
    outcome = add_target(config, copy, "lit_scene", "l2", progress=False,
                         label_fn=lambda data: data["images/rgb"][:].astype(np.float32).mean(axis=(1, 2, 3))[:, None])
    assert outcome.trained["lit_scene"] > 0 and "lit_scene" not in {t.name for t in registry.all_tasks()}
    store = zarr.open_group(str(copy / "transfers.zarr"), mode="r")
    assert "lit_scene" in store.attrs["targets"] and store["lit_scene"].attrs["complete"]


def test_ahp_solve_and_evaluate_run_on_the_tiny_transfers(transferred, tmp_path):
    """Stages III and IV on real stage II output (not a synthetic store)."""
    import csv
    import json

    args, copy = _copy(transferred, tmp_path, "data.zarr", "features.zarr", "models")
    assert main([*args, "ahp"]) == 0
    with (copy / "affinity.csv").open() as handle:
        rows = {r["target"]: r for r in csv.DictReader(handle)}
    assert sorted(rows) == sorted(TARGETS)
    for row in rows.values():
        values = [float(v) for k, v in row.items() if k != "target" and v]
        assert abs(sum(values) - 1) < 1e-9 and min(values) > 0
    assert (copy / "affinity_heatmap.png").stat().st_size > 10_000
    assert main([*args, "solve", "--budget", "1", "--max-order", "2"]) == 0
    taxonomy = json.loads((copy / "taxonomy.json").read_text())
    assert taxonomy["status"] == "optimal" and len(taxonomy["supervised"]) == 1
    assert sorted(taxonomy["policy"]) == sorted(TARGETS)
    assert main([*args, "evaluate", "--max-order", "2"]) == 0
    assert (copy / "evaluation.csv").is_file() and (copy / "evaluation_curves.png").is_file()


def test_run_does_every_stage_and_skips_what_is_up_to_date(transferred, tmp_path, capsys):
    import json

    args, copy = _copy(transferred, tmp_path, quiet=False)
    before = _losses(copy)
    capsys.readouterr()
    assert main([*args, "run"]) == 0
    err = capsys.readouterr().err
    assert "data.zarr up to date" in err and err.count("up to date") >= 4, err
    timings = json.loads((copy / "run_timings.json").read_text())["seconds"]
    assert list(timings) == ["data", "train", "extract", "transfer", "ahp", "solve", "evaluate", "report"]
    for name in ("affinity.csv", "taxonomy.json", "evaluation.csv", "report/index.html"):
        assert (copy / name).is_file()
    after = _losses(copy)
    for target, (_, losses) in before.items():
        np.testing.assert_array_equal(after[target][1], losses)
