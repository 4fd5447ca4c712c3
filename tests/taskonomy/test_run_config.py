"""A run folder knows its config: a command without --config uses the folder's config.yaml; --set changes keys on
top of it; a change to a stored result the command does not rebuild is refused; config.yaml and run.json are
written only when a command succeeds; a missing folder is refused without creating anything; a folder of an older
format is refused until `taskonomy upgrade`.

Every case runs the CLI as a user does on a private copy of the complete small run folder of the fault suite
(tests/_faults.py), and compares the folder's files byte for byte where nothing may change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
import zarr

from _faults import cli, copy_run, one_line, snapshot, write_config
from taskonomy import TaskonomyError
from taskonomy.cli import main
from taskonomy.config import load_config
from taskonomy.runtime import cap_threads


@pytest.fixture
def run(faults_run, tmp_path) -> tuple[Path, Path, dict[str, bytes]]:
    """(config, a private copy of the complete small run, its files' bytes before the test)."""
    config, reference = faults_run
    copy = copy_run(reference, tmp_path)
    yield config, copy, snapshot(copy)
    cap_threads(2)  # the small config runs on one thread; the rest of the suite expects two


def bare(run_dir: Path, *args: str) -> int:
    """`taskonomy -q --run-dir RUN_DIR ARGS`: no --config."""
    return main(["-q", "--run-dir", str(run_dir), *args])


def stored(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def losses(run_dir: Path) -> dict[str, list]:
    store = zarr.open_group(str(run_dir / "transfers.zarr"), mode="r")
    return {t: store[t]["losses"][:].tolist() for t in store.attrs["targets"]}


def test_a_new_folder_records_the_whole_resolved_config_and_its_format(faults_run):
    config, reference = faults_run
    assert stored(reference) == load_config(config).model_dump(mode="json")  # threads and taxonomy included
    assert json.loads((reference / "run.json").read_text()) == {"format": 1}


def test_a_bare_command_uses_the_folders_config_and_leaves_it_as_it_is(run):
    _, copy, before = run
    assert bare(copy, "solve", "--budget", "1") == 0
    taxonomy = json.loads((copy / "taxonomy.json").read_text())
    # the folder's taxonomy settings (max order 2, time limit 10), not the built-in defaults (3, 60)
    assert taxonomy["max_order"] == 2 and taxonomy["budget"] == 1
    assert (copy / "config.yaml").read_bytes() == before["config.yaml"]
    assert (copy / "run.json").read_bytes() == before["run.json"]
    after = snapshot(copy)
    for name in ("taxonomy.json", "taxonomy_graph.png"):  # solve's own outputs (its wall time is in taxonomy.json)
        after.pop(name), before.pop(name)
    assert after == before


def test_without_run_dir_the_folder_is_runs_of_the_config_name(run, tmp_path, monkeypatch):
    _, copy, _ = run
    work = tmp_path / "work"
    (work / "runs").mkdir(parents=True)
    copy.rename(work / "runs" / "default")  # the default name: no --config, no --run-dir
    monkeypatch.chdir(work)
    assert main(["-q", "solve"]) == 0
    assert json.loads((work / "runs" / "default" / "taxonomy.json").read_text())["max_order"] == 2
    assert sorted(p.name for p in work.iterdir()) == ["runs"] and sorted(p.name for p in (work / "runs").iterdir()) \
        == ["default"]


def test_set_retrains_what_its_key_changes_and_is_saved(run):
    _, copy, before = run
    old = losses(copy)
    assert bare(copy, "--set", "transfer.epochs=2", "transfer") == 0
    assert losses(copy) != old  # retrained: one more epoch moves every readout
    saved = stored(copy)
    assert saved["transfer"]["epochs"] == 2
    saved["transfer"]["epochs"] = 1
    assert saved == yaml.safe_load(before["config.yaml"])  # nothing else changed in config.yaml
    retrained = losses(copy)
    assert bare(copy, "transfer") == 0  # the folder's config is now epochs 2: up to date, nothing retrained
    assert losses(copy) == retrained and stored(copy)["transfer"]["epochs"] == 2


def test_set_of_a_stage_the_command_does_not_rebuild_is_refused(run, capsys):
    _, copy, before = run
    assert bare(copy, "--set", "data.image_size=32", "solve") == 2
    assert one_line(capsys) == (
        f"taskonomy: error: data.image_size is 16 in {copy}/config.yaml, 32 here; `taskonomy solve` does not rebuild "
        f"data.zarr: run `taskonomy data` (or `taskonomy run`) with it")
    assert snapshot(copy) == before


@pytest.mark.parametrize("args,expected", [
    (["--set", "train.epochs=3", "extract"], "train.epochs is 1 in {run}/config.yaml, 3 here; `taskonomy extract` "
                                             "does not rebuild models/: run `taskonomy train`"),
    (["--set", "seed=2", "train"], "seed is 1 in {run}/config.yaml, 2 here; `taskonomy train` does not rebuild "
                                   "data.zarr: run `taskonomy data`"),
    (["--set", "ahp.resamples=5", "transfer"], "ahp.resamples is 10 in {run}/config.yaml, 5 here; `taskonomy transfer` "
                                               "does not rebuild affinity.csv: run `taskonomy ahp`"),
    (["--set", "data.tasks=[normal]", "report"], 'data.tasks is ["depth_zbuffer", "normal", "class_scene"] in '
                                                 '{run}/config.yaml, ["normal"] here; `taskonomy report`'),
    (["--set", "transfer.epochz=5", "transfer"], "--set transfer.epochz=5: unknown key 'transfer.epochz'"),
    (["--set", "transfer.epochs=0", "transfer"], "--set transfer.epochs=0: transfer.epochs: Input should be greater"),
    (["--set", "transfer", "transfer"], "--set transfer: expected KEY=VALUE"),
    (["--set", "seed.x=1", "data"], "--set seed.x=1: seed is a value, not a section of keys"),
], ids=["train-by-extract", "seed-by-train", "ahp-by-transfer", "list-value", "unknown-key", "bad-value",
        "no-value", "into-a-value"])
def test_refused_settings_are_one_line_and_change_nothing(run, capsys, args, expected):
    _, copy, before = run
    assert bare(copy, *args) == 2
    assert expected.format(run=copy) in one_line(capsys)
    assert snapshot(copy) == before


def test_a_config_file_that_conflicts_with_the_folder_is_refused(run, tmp_path, capsys):
    _, copy, before = run
    other = write_config(tmp_path, "other.yaml", data={"image_size": 32})
    assert cli(other, copy, "solve") == 2
    assert one_line(capsys) == (
        f"taskonomy: error: data.image_size is 16 in {copy}/config.yaml, 32 here; `taskonomy solve` does not rebuild "
        f"data.zarr: run `taskonomy data` (or `taskonomy run`) with it")
    assert snapshot(copy) == before


def test_taxonomy_threads_and_the_name_change_no_stored_result(run):
    config, copy, before = run
    assert bare(copy, "--set", "taxonomy.budget=2", "--threads", "2", "solve") == 0
    assert json.loads((copy / "taxonomy.json").read_text())["budget"] == 2
    assert (copy / "config.yaml").read_bytes() == before["config.yaml"]  # taxonomy.* and threads are never saved
    renamed = copy.parent / "renamed.yaml"
    renamed.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "name": "renamed", "threads": 2,
                                       "taxonomy": {"budget": 3}}))
    assert cli(renamed, copy, "solve") == 0
    saved = stored(copy)
    assert saved["name"] == "renamed" and saved["threads"] == 1 and saved["taxonomy"]["budget"] == 1


def test_run_saves_the_keys_of_each_stage_that_succeeded(run, capsys, monkeypatch):
    import taskonomy.transfer.stage

    _, copy, before = run

    def refused(*_args, **_kwargs):
        raise TaskonomyError("transfer refused for the test")

    monkeypatch.setattr(taskonomy.transfer.stage, "run_transfer", refused)
    assert bare(copy, "--set", "name=renamed", "--set", "transfer.epochs=2", "--set", "ahp.resamples=5", "run") == 2
    assert "transfer refused for the test" in one_line(capsys)
    saved = stored(copy)
    # data, train and extract succeeded (up to date): the name is saved; transfer failed and ahp never ran
    assert saved["name"] == "renamed" and saved["transfer"]["epochs"] == 1 and saved["ahp"]["resamples"] == 10
    after = snapshot(copy)
    after.pop("config.yaml"), before.pop("config.yaml")
    assert after == before


def test_a_command_on_a_missing_folder_creates_nothing(tmp_path, capsys):
    config = write_config(tmp_path)
    missing = tmp_path / "never" / "made"
    for args in (["ahp"], ["solve"], ["report"], ["upgrade"], ["--set", "taxonomy.budget=2", "evaluate"]):
        assert bare(missing, *args) == 2
        assert one_line(capsys) == (f"taskonomy: error: run folder {missing} does not exist; make it with `taskonomy "
                                    f"--config FILE --run-dir {missing} run` (or `data`)")
    assert cli(config, missing, "train") == 2
    assert f"run folder {missing} does not exist; make it with `taskonomy --config {config} --run-dir" in \
        one_line(capsys)
    assert not (tmp_path / "never").exists()


def test_data_that_fails_on_its_input_removes_the_folder_it_made(tmp_path, capsys):
    config = write_config(tmp_path, data={"n_scenes": 4, "splits": {"test": 0.9, "transfer": 0.5}})
    assert cli(config, tmp_path / "new" / "run", "data") == 2
    assert "leaves no training scene" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faults.yaml"]


def test_an_older_folder_is_refused_until_upgraded(run, capsys, monkeypatch):
    import taskonomy.store

    _, copy, before = run
    (copy / "run.json").unlink()  # a folder of the version before run folders had a format
    before.pop("run.json")
    assert bare(copy, "solve") == 2
    assert one_line(capsys) == (f"taskonomy: error: run folder {copy} has format 0, this version reads format 1; "
                                f"upgrade it with `taskonomy --run-dir {copy} upgrade`")
    assert snapshot(copy) == before

    refreshed = []
    real = getattr(taskonomy.store, "refresh_inventory", lambda path, rebuild=None: None)

    def recording(path, *args, **kwargs):
        refreshed.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(taskonomy.store, "refresh_inventory", recording, raising=False)
    assert bare(copy, "upgrade") == 0
    assert refreshed == ["data.zarr", "features.zarr", "transfers.zarr"]
    assert json.loads((copy / "run.json").read_text()) == {"format": 1}
    assert (copy / "config.yaml").read_bytes() == before["config.yaml"]
    assert bare(copy, "upgrade") == 0 and len(refreshed) == 3  # format 1 already: nothing to do
    assert bare(copy, "solve") == 0


def test_a_folder_of_a_newer_format_is_refused_even_by_upgrade(run, capsys):
    _, copy, _ = run
    (copy / "run.json").write_text('{"format": 99}\n')
    before = snapshot(copy)
    for command in ("solve", "upgrade"):
        assert bare(copy, command) == 2
        assert "has format 99, newer than this version's 1; use a newer taskonomy-engine" in one_line(capsys)
    assert snapshot(copy) == before
