"""`taskonomy published`: the release's pickles read safely, imported exactly, solved, evaluated and reported."""

from __future__ import annotations

import csv
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from taskonomy import TaskonomyError
from taskonomy.artifacts import read_affinity, read_win_rates
from taskonomy.cli import main
from taskonomy.runfolder import RunFolder
from taskonomy.taxonomy import published as pub
from taskonomy.taxonomy.evaluate import published_scores
from taskonomy.taxonomy.stage import read_affinity as read_hyperedges

TABLES = {"all_affinities": read_affinity, "wins_vs_task": lambda r: read_win_rates(r, "wins_vs_task"),
          "wins_vs_pixels": lambda r: read_win_rates(r, "wins_vs_pixels")}


def taskonomy(run_dir: Path, *args: str) -> int:
    return main(["-q", "--run-dir", str(run_dir), *args])


@pytest.fixture(scope="module")
def published_16k(tmp_path_factory) -> Path:
    """The 16k set as a run folder (read-only: copy it)."""
    run_dir = tmp_path_factory.mktemp("published") / "p16k"
    assert taskonomy(run_dir, "published") == 0
    return run_dir


def _plain(path: Path) -> dict:
    with path.open("rb") as handle:  # the shipped files, trusted here: the reference for the restricted reader
        return pickle.load(handle, encoding="latin1")


@pytest.mark.parametrize("images", ["16k", "1k", "all"])
def test_every_value_is_imported_exactly_or_listed_as_skipped(images, published_16k, tmp_path):
    run_dir = published_16k if images == "16k" else tmp_path / images
    if images != "16k":  # also as the issue writes it, --run-dir after the command
        assert main(["-q", "published", "--images", images, "--run-dir", str(run_dir)]) == 0
    with (run_dir / "published_skipped.csv").open() as handle:
        skipped = {(r["file"], r["key"]): r["reason"] for r in csv.DictReader(handle)}
    for kind, read in TABLES.items():
        name = f"{kind}{pub.IMAGES[images]}.pkl"
        table = read(run_dir)
        reference = _plain(pub.data_folder() / name)
        imported = 0
        for key, value in reference.items():
            try:
                target, column = pub.column_of(key)
            except ValueError:
                assert (name, key) in skipped
                continue
            imported += 1
            assert abs(table.row(target)[column] - float(value)) <= 1e-12, key
            assert table.row(target)[column] == float(value)  # 17 digits: the same float64
        assert imported + sum(1 for f, _ in skipped if f == name) == len(reference)
        assert sum(len(table.row(t)) for t in table.targets) == imported  # nothing else in the table
    doc = json.loads((run_dir / "published.json").read_text())
    assert doc["images"] == images and "MIT" in doc["source"]


def test_our_names_and_columns():
    assert pub.column_of("self__rgb2sfnorm") == ("normal", "full")
    assert pub.column_of("rgb2sfnorm__rgb2sfnorm") == ("normal", "normal")  # t__t: t's own encoder
    assert pub.column_of("rgb2sfnorm__random__reshade") == ("reshading", "normal+random")  # sorted, our names
    assert pub.column_of("class_selected__class_1000") == ("class_object", "class_selected")
    for key, reason in (("rgb2sfnorm", "not of the form"), ("rgb2sfnorm__self", "not a target"),
                        ("self__rgb2depth__reshade", "'self' together"), ("nonsense__reshade", "unknown task"),
                        ("rgb2depth__rgb2depth__reshade", "named twice"),
                        ("rgb2depth__reshade__reshade", "target is one of several")):
        with pytest.raises(ValueError, match=reason):
            pub.column_of(key)


def test_keys_without_a_place_are_listed_with_their_reasons(tmp_path):
    for kind in pub.KINDS:
        data = {"self__rgb2sfnorm": np.float64(0.5), "rgb2depth__rgb2sfnorm": np.float64(0.5),
                "self__random__rgb2sfnorm": np.float64(0.0), "foo__rgb2sfnorm": np.float64(0.0)}
        (tmp_path / f"{kind}_1k.pkl").write_bytes(pickle.dumps(data, protocol=3))
    result = pub.load_published("1k", tmp_path)
    assert result.tables["all_affinities"] == {"normal": {"full": 0.5, "depth_zbuffer": 0.5}}
    assert [(k, r) for f, k, r in result.skipped if f == "all_affinities_1k.pkl"] == [
        ("self__random__rgb2sfnorm", "'self' together with other sources"), ("foo__rgb2sfnorm", "unknown task 'foo'")]
    (tmp_path / "run").mkdir()
    pub.write_published(result, tmp_path / "run")
    with (tmp_path / "run" / "published_skipped.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 6  # two per file


def test_a_hostile_pickle_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    class Boom:
        def __reduce__(self):
            import os

            return os.system, ("echo owned > " + str(tmp_path / "owned"),)

    for kind in pub.KINDS:
        (tmp_path / f"{kind}_16k.pkl").write_bytes(pickle.dumps({"self__rgb2sfnorm": Boom()}))
    with pytest.raises(TaskonomyError, match=r"refused: the pickle calls (posix|os)\.system"):
        pub.load_pickle(tmp_path / "all_affinities_16k.pkl")
    monkeypatch.setattr(pub, "data_folder", lambda: tmp_path)
    run_dir = tmp_path / "out"
    assert taskonomy(run_dir, "published") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err, err
    assert not run_dir.exists() and not (tmp_path / "owned").exists()
    (tmp_path / "all_affinities_16k.pkl").write_bytes(b"\x80\x02}q\x00(X")  # truncated
    with pytest.raises(TaskonomyError, match="not a readable pickle"):
        pub.load_pickle(tmp_path / "all_affinities_16k.pkl")


def test_a_run_folder_is_not_overwritten(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data.zarr").mkdir()
    assert taskonomy(run_dir, "published") == 2
    assert "holds a run's data.zarr" in capsys.readouterr().err


def test_solve_prints_the_papers_taxonomy(published_16k, tmp_path, capsys):
    run_dir = shutil.copytree(published_16k, tmp_path / "p")
    assert main(["--run-dir", str(run_dir), "solve", "--budget", "4", "--max-order", "2"]) == 0
    err = capsys.readouterr().err
    assert "solve: supervise" in err and "normal" in err
    assert taskonomy(run_dir, "solve", "--budget", "3", "--max-order", "1") == 0
    doc = json.loads((run_dir / "taxonomy.json").read_text())
    assert doc["supervised"] == ["denoising", "edge_texture", "normal"]  # the reference point
    assert doc["policy"]["normal"]["column"] == "full"
    assert taskonomy(run_dir, "all-for-one", "reshading", "--supervised", "normal,depth_zbuffer") == 0
    assert taskonomy(run_dir, "report") == 0
    assert "Agreement with the published" in (run_dir / "report" / "index.html").read_text()


def test_evaluate_scores_policies_by_the_published_win_rates(published_16k, tmp_path):
    run_dir = shutil.copytree(published_16k, tmp_path / "p")
    assert taskonomy(run_dir, "evaluate", "--max-order", "2", "--sources", "denoising,normal") == 0
    pixels, task = read_win_rates(run_dir, "wins_vs_pixels"), read_win_rates(run_dir, "wins_vs_task")
    with (run_dir / "evaluation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["budget"] for r in rows} == {"1", "2"} and len(rows) == 2 * 2 * 22
    for row in rows:
        target, transfer = row["target"], row["transfer"]
        assert float(row["gain"]) == pytest.approx(pixels.row(target)[transfer], abs=1e-6)
        quality = 0.5 if transfer == "full" else task.row(target)[transfer]
        assert float(row["quality"]) == pytest.approx(quality, abs=1e-6)


def test_self_and_own_readout_are_one_hyperedge_that_needs_the_targets_labels(published_16k, tmp_path, capsys):
    run_dir = shutil.copytree(published_16k, tmp_path / "p")
    table = read_affinity(run_dir)
    full, own = table.row("normal")["full"], table.row("normal")["normal"]
    assert own < full  # in the release the task-specific network always beats t__t
    edges = [tr for tr in read_hyperedges(run_dir).transfers if tr.target == "normal" and tr.sources == ("normal",)]
    assert [tr.affinity for tr in edges] == [full]
    # make t__t the better of the two: ({normal}, normal) takes its affinity and is named by its column
    path = RunFolder(run_dir).affinity
    rows = list(csv.reader(path.open()))
    header, line = rows[0], next(r for r in rows if r[0] == "normal")
    line[header.index("full")], line[header.index("normal")] = repr(own), repr(full)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    affinity = read_hyperedges(run_dir)
    assert affinity.own["normal"] == "normal" and affinity.own["depth_zbuffer"] == "full"
    assert [tr.affinity for tr in affinity.transfers if tr.target == tr.sources[0] == "normal"] == [full]
    assert taskonomy(run_dir, "solve", "--budget", "3", "--max-order", "1") == 0
    doc = json.loads((run_dir / "taxonomy.json").read_text())
    assert "normal" in doc["supervised"] and doc["policy"]["normal"]["column"] == "normal"
    assert taskonomy(run_dir, "all-for-one", "normal", "--supervised", "normal", "--max-order", "1") == 0
    best = json.loads((run_dir / "all_for_one_normal.json").read_text())["best"]
    assert (best["transfer"], best["column"], best["affinity"]) == ("full", "normal", full)
    # scored as the readout it is, not as the task-specific network
    scores = published_scores({"normal": "full"}, {"normal": {"full": 0.99, "normal": 0.98}},
                              {"normal": {"full": 0.5, "normal": 0.08}}, affinity.own)
    assert scores == {"normal": (0.98, 0.08)}
    # only t's labels make either: a budget without normal cannot use them
    assert taskonomy(run_dir, "solve", "--budget", "1", "--max-order", "1", "--sources", "denoising") == 0
    assert json.loads((run_dir / "taxonomy.json").read_text())["policy"]["normal"]["transfer"] == "denoising"
    # in a run's own folder a column that reads the target itself stays an error
    (run_dir / "published.json").unlink()
    with pytest.raises(TaskonomyError, match="reads the target itself"):
        read_affinity(run_dir)


def test_scores_without_a_win_rate_are_left_out():
    assert published_scores({"a": "b"}, {}, {}) == {}
    gain, quality = published_scores({"a": "b"}, {"a": {"b": 0.7}}, {})["a"]
    assert gain == 0.7 and math.isnan(quality)


@pytest.mark.parametrize("command", [["data"], ["train"], ["ahp"], ["run"], ["transfer"]])
def test_the_stages_of_a_run_refuse_a_published_folder(published_16k, tmp_path, capsys, command):
    run_dir = shutil.copytree(published_16k, tmp_path / "p")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir())
    assert taskonomy(run_dir, *command) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds the published Taskonomy results" in err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_dir.iterdir()) == before
