from __future__ import annotations

import pytest

from taskonomy import TaskonomyError
from taskonomy.config import load_config
from conftest import ROOT


@pytest.mark.parametrize("name", ["tiny", "default", "paper"])
def test_shipped_configs_load(name):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config.name == name
    assert config.data.task_names()


def test_paper_config_has_every_task_and_the_multi_view_ones():
    from taskonomy import tasks as registry

    config = load_config(ROOT / "configs" / "paper.yaml")
    labelled = {t.name for t in registry.all_tasks() if t.head != "none"}
    assert set(config.data.task_names()) == labelled
    assert {"egomotion", "fixated_pose", "nonfixated_pose", "point_matching"} <= labelled
    assert config.data.image_size % 8 == 0 and config.train.device == "auto"


def test_defaults_need_no_file():
    assert load_config().name == "default"


def test_the_built_in_defaults_are_the_default_config():
    assert load_config(None) == load_config(ROOT / "configs" / "default.yaml")
    assert load_config(None).model_dump() == load_config(ROOT / "configs" / "default.yaml").model_dump()


@pytest.mark.parametrize("settings,expected", [
    (["transfer.epochs=5"], {"transfer.epochs": 5}),
    (["transfer.epochs=5", "taxonomy.budget=2.5", "data.tasks=[normal, rgb2sfnorm2]"], None),
    (["data.tasks=[normal, class_scene]", "transfer.targets=[normal]"],
     {"data.tasks": ["normal", "class_scene"], "transfer.targets": ["normal"]}),
    (["taxonomy.importance.normal=2", "taxonomy.importance.class_scene=0.5"],
     {"taxonomy.importance": {"normal": 2.0, "class_scene": 0.5}}),
    (["data.splits={test: 0.5}"], {"data.splits.test": 0.5}),  # a mapping value replaces the section
    (["transfer.scheduler=tcp://host:8786", "threads=3", "name=other"],
     {"transfer.scheduler": "tcp://host:8786", "threads": 3, "name": "other"}),
])
def test_set_changes_dotted_keys_with_yaml_values(settings, expected):
    from taskonomy.config import changed_keys

    if expected is None:  # rgb2sfnorm2 is no task: the last --set is named
        with pytest.raises(TaskonomyError, match=r"^--set data\.tasks=\[normal, rgb2sfnorm2\]: data\.tasks: "):
            load_config(None, None, settings)
        return
    config = load_config(None, None, settings)
    assert {key: new for key, _, new in changed_keys(load_config(), config)} == expected


@pytest.mark.parametrize("setting,expected", [
    ("transfer.epochz=5", "--set transfer.epochz=5: unknown key 'transfer.epochz'"),
    ("nope=1", "--set nope=1: unknown key 'nope'"),
    ("transfer.epochs=five", "--set transfer.epochs=five: transfer.epochs: Input should be a valid integer"),
    ("data.image_size=30", "--set data.image_size=30: data.image_size: expected a multiple of 8"),
    ("transfer.epochs", "--set transfer.epochs: expected KEY=VALUE with a dotted key"),
    ("=5", "--set =5: expected KEY=VALUE"),
    ("transfer..epochs=5", "--set transfer..epochs=5: expected KEY=VALUE"),
    ("transfer.epochs=[1", "--set transfer.epochs=[1: the value is not valid YAML"),
    ("transfer.epochs.x=1", "--set transfer.epochs.x=1: transfer.epochs is a value, not a section of keys"),
])
def test_bad_settings_are_one_line_errors_naming_the_setting(tmp_path, setting, expected):
    path = tmp_path / "base.yaml"
    path.write_text("transfer: {epochs: 3}\n")
    with pytest.raises(TaskonomyError) as info:
        load_config(path, None, [setting])
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


def test_every_key_belongs_to_a_stage_or_changes_nothing_stored():
    from taskonomy.config import flat_keys, stage_of

    owners = {key: stage_of(key) for key in flat_keys(load_config())}
    assert owners["seed"] == owners["data.image_size"] == owners["data.splits.test"] == "data"
    assert owners["train.epochs"] == "train" and owners["extract.taskonomy_encoders"] == "extract"
    assert owners["transfer.lr"] == "transfer" and owners["ahp.resamples"] == "ahp"
    assert owners["threads"] == owners["taxonomy.budget"] == owners["taxonomy.importance"] == "ephemeral"
    assert owners["name"] is None
    assert set(owners.values()) == {"data", "train", "extract", "transfer", "ahp", "ephemeral", None}


@pytest.mark.parametrize("text,expected", [
    ("data:\n  image_size: 30\n", r"data\.image_size: expected a multiple of 8"),
    ("data:\n  imagesize: 32\n", r"unknown key 'data\.imagesize'"),
    ("nope: 1\n", r"unknown key 'nope'"),
    ("data:\n  tasks: [normal, normal]\n", r"data\.tasks: task 'normal' is listed twice"),
    ("data:\n  tasks: [warp_drive]\n", r"data\.tasks: unknown task 'warp_drive'"),
    ("data:\n  splits: {test: 1.5}\n", r"data\.splits\.test: Input should be less than 1"),
    ("seed: minus one\n", r"seed: Input should be a valid integer"),
    ("data: [1, 2\n", r"not valid YAML at line"),
    ("- a\n- b\n", r"expected a mapping"),
    ("name: ../escape\n", r"name: expected 1-64 letters"),
    ("train:\n  task_epochs: {warp_drive: 3}\n", r"train\.task_epochs: unknown task 'warp_drive'"),
    ("train:\n  task_epochs: {normal: 0}\n", r"train\.task_epochs: normal: expected 1 to 1000 epochs, got 0"),
])
def test_bad_configs_are_one_line_errors_naming_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskonomyError, match=expected) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_task_epochs_change_only_their_own_networks_stamp():
    from taskonomy.extract.pipeline import _model_hash

    plain = load_config()
    longer = load_config(None, None, ["train.task_epochs={class_scene: 40, reshade: 3}"])
    assert longer.train.task_epochs == {"class_scene": 40, "reshading": 3}  # aliases resolved
    assert longer.train.epochs_for("class_scene") == 40 and longer.train.epochs_for("normal") == plain.train.epochs
    assert _model_hash(longer, "data", "normal") == _model_hash(plain, "data", "normal")
    assert _model_hash(longer, "data", "class_scene") != _model_hash(plain, "data", "class_scene")
    same = load_config(None, None, [f"train.task_epochs={{normal: {plain.train.epochs}}}"])
    assert _model_hash(same, "data", "normal") == _model_hash(plain, "data", "normal")
