"""edgekd.tasks.registry: one decorator registry, get_task by name with its dims."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from edgekd.errors import ConfigError
from edgekd.tasks import (
    ALIASES,
    TASKS,
    CausalLM,
    ImageClassification,
    get_task,
    register_task,
    task_class,
)
from edgekd.tasks.classification import ClassificationTask


def test_the_three_tasks_are_registered_by_name() -> None:
    assert {n: c.__name__ for n, c in TASKS.items()} == {
        "image-classification": "ImageClassification", "text-classification": "TextClassification",
        "causal-lm": "CausalLM"}
    assert all(cls.name == name for name, cls in TASKS.items())


def test_classification_is_todays_name_for_image_classification() -> None:
    assert ALIASES == {"classification": "image-classification"}
    task = get_task("classification", input_shape=[1, 28, 28], num_classes=10)
    assert task == ImageClassification((1, 28, 28), 10) and task.name == "image-classification"


def test_an_unknown_task_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        get_task("causal_lm", vocab_size=10, max_length=8)
    assert "unknown task 'causal_lm'" in str(err.value)
    assert "causal-lm, image-classification, text-classification" in str(err.value)
    assert "causal-lm" in err.value.hint
    with pytest.raises(ConfigError, match="unknown task 'segmentation'"):
        task_class("segmentation")


def test_wrong_dims_say_which_dims_the_task_takes() -> None:
    with pytest.raises(ConfigError, match="num_labels") as err:
        get_task("causal-lm", vocab_size=10, max_length=8, num_labels=2)
    assert err.value.hint == "it takes vocab_size, max_length, input_names (optional)"
    with pytest.raises(ConfigError, match="max_length"):
        get_task("text-classification", vocab_size=10, num_labels=2)


@pytest.mark.parametrize(("name", "dims", "message"), [
    ("causal-lm", {"vocab_size": 10, "max_length": 1}, "max_length must be an integer >= 2"),
    ("causal-lm", {"vocab_size": 0, "max_length": 8}, "vocab_size must be an integer >= 1"),
    ("text-classification", {"vocab_size": 10, "num_labels": 1, "max_length": 8}, "num_labels must be an integer >= 2"),
    ("causal-lm", {"vocab_size": 10, "max_length": 8, "input_names": ["attention_mask"]}, "input_ids once"),
    ("causal-lm", {"vocab_size": 10, "max_length": 8, "input_names": ["input_ids", "pixel_mask"]}, "known inputs"),
    ("image-classification", {"input_shape": [3, 0], "num_classes": 4}, "input_shape must be positive"),
    ("image-classification", {"input_shape": [3, 8, 8], "num_classes": 2.5}, "num_classes must be an integer"),
])
def test_bad_dim_values_are_config_errors(name: str, dims: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        get_task(name, **dims)


def test_a_name_registers_once() -> None:
    before = dict(TASKS)
    with pytest.raises(ValueError, match="already registered"):
        register_task("causal-lm")(CausalLM)
    with pytest.raises(ValueError, match="already registered"):
        register_task("new-task", aliases=("classification",))(CausalLM)
    assert TASKS == before and "new-task" not in TASKS


def test_a_new_task_is_one_registered_class() -> None:
    @dataclass(frozen=True)
    class Tabular(ClassificationTask):
        features: int

        @property
        def classes(self) -> int:
            return 2

        def inputs(self) -> tuple:
            return ImageClassification((self.features,), 2).inputs()

    try:
        register_task("test-tabular")(Tabular)
        task = get_task("test-tabular", features=5)
        assert task.name == "test-tabular" and task.dummy_inputs(3)["input"].shape == (3, 5)
    finally:
        TASKS.pop("test-tabular", None)
