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
])
def test_bad_configs_are_one_line_errors_naming_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskonomyError, match=expected) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
