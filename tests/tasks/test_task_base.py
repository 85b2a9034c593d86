"""edgekd.tasks.base: specs, metric direction, resolved inputs, feeds and forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from task_models import CLASSES, IMAGE_SHAPE, LM_DIMS, TEXT_DIMS, VOCAB, bert, gpt2

from edgekd.errors import ConfigError, DataError
from edgekd.tasks import (
    CausalLM,
    ImageClassification,
    MetricSpec,
    TensorSpec,
    TextClassification,
)


def test_tensor_spec_names_its_dynamic_axes() -> None:
    spec = TensorSpec("input_ids", "int64", ("batch_size", "sequence_length"), "token_ids")
    assert spec.axes == {0: "batch_size", 1: "sequence_length"} and spec.rank == 2
    assert TensorSpec("input", "float32", ("batch_size", 3, 8, 8), "image").axes == {0: "batch_size"}
    with pytest.raises(ValueError, match="role"):
        TensorSpec("x", "float32", (1,), "pixels")


@pytest.mark.parametrize(("spec", "before", "after", "name", "change"), [
    (MetricSpec("accuracy", "%", True), 90.0, 88.5, "accuracy_drop_pt", 1.5),
    (MetricSpec("accuracy", "%", True), 88.5, 90.0, "accuracy_drop_pt", -1.5),
    (MetricSpec("perplexity", "", False), 10.0, 11.0, "perplexity_increase_pct", 10.0),
    (MetricSpec("perplexity", "", False), 20.0, 15.0, "perplexity_increase_pct", -25.0),
])
def test_metric_change_follows_the_direction(spec: MetricSpec, before: float, after: float, name: str,
                                             change: float) -> None:
    assert spec.degradation_name == name
    assert spec.degradation(before, after) == pytest.approx(change)
    assert spec.better(after, before) == (change < 0)


def test_a_relative_change_from_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="undefined"):
        MetricSpec("perplexity", "", False).degradation(0.0, 2.0)


def test_model_inputs_say_where_each_dim_came_from() -> None:
    task = TextClassification(**TEXT_DIMS)
    ids = task.model_inputs(4).inputs[0]
    assert (ids.name, ids.shape, ids.role, ids.batch_axis, ids.vocab_size) == ("input_ids", (4, 16), "token_ids", 0, VOCAB)
    assert ids.sources == ("batch", "task text-classification default sequence_length")
    assert task.model_inputs(1, sequence_length=7).inputs[1].sources[1] == "sequence_length given"
    image = ImageClassification(IMAGE_SHAPE, CLASSES).model_inputs(2).inputs[0]
    assert image.shape == (2, *IMAGE_SHAPE) and image.vocab_size is None


def test_model_inputs_refuse_unknown_dims_and_empty_batches() -> None:
    with pytest.raises(ConfigError, match="unknown dims height") as err:
        TextClassification(**TEXT_DIMS).model_inputs(1, height=3)
    assert "sequence_length" in err.value.hint
    with pytest.raises(ConfigError, match="unknown dims sequence_length") as err:
        ImageClassification(IMAGE_SHAPE, CLASSES).dummy_inputs(1, sequence_length=3)
    assert "only the batch" in err.value.hint
    with pytest.raises(ConfigError, match=">= 1"):
        CausalLM(**LM_DIMS).model_inputs(0)
    with pytest.raises(ConfigError, match="sequence_length=17 > 16"):
        CausalLM(**LM_DIMS).model_inputs(1, sequence_length=17)


def test_dummy_inputs_are_seeded() -> None:
    task = CausalLM(**LM_DIMS)
    a, b, c = task.dummy_inputs(2, seed=3), task.dummy_inputs(2, seed=3), task.dummy_inputs(2, seed=4)
    assert (a["input_ids"] == b["input_ids"]).all() and not (a["input_ids"] == c["input_ids"]).all()


def test_feed_fills_inputs_a_batch_leaves_out() -> None:
    task = CausalLM(**LM_DIMS, input_names=("input_ids", "attention_mask", "token_type_ids", "position_ids"))
    feeds = task.feed({"input_ids": np.array([[5, 6, 7, 8, 9]], dtype=np.int32),
                       "attention_mask": np.array([[0, 0, 1, 1, 1]]), "labels": np.zeros((1, 5)), "extra": 1})
    assert list(feeds) == ["input_ids", "attention_mask", "token_type_ids", "position_ids"]
    assert feeds["input_ids"].dtype == torch.int64
    assert feeds["token_type_ids"].tolist() == [[0, 0, 0, 0, 0]]
    assert feeds["position_ids"].tolist() == [[0, 0, 0, 1, 2]]  # counted along the mask (left padding)
    assert task.feed({"input_ids": np.ones((2, 3), np.int64)})["attention_mask"].tolist() == [[1, 1, 1]] * 2


def test_feed_casts_images_and_needs_the_required_inputs() -> None:
    task = ImageClassification(IMAGE_SHAPE, CLASSES)
    assert task.feed({"input": np.zeros((1, *IMAGE_SHAPE))})["input"].dtype == torch.float32
    with pytest.raises(DataError, match="no 'input'"):
        task.feed({"labels": np.zeros(1)})
    with pytest.raises(DataError, match="no 'input_ids'"):
        CausalLM(**LM_DIMS).feed({"attention_mask": np.ones((1, 3))})


def test_forward_gives_a_hf_model_its_own_inputs_by_name() -> None:
    model = gpt2(16).eval()
    task = CausalLM(**LM_DIMS, input_names=("input_ids", "attention_mask", "position_ids"))
    ids, mask = torch.randint(0, VOCAB, (2, 6)), torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids, "index": torch.tensor([0, 1])}
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, position_ids=torch.tensor([[0, 0, 1, 2, 3, 4], list(range(6))])).logits
        torch.testing.assert_close(task.forward(model, batch), expected)


def test_forward_names_the_input_a_hf_model_does_not_take() -> None:
    with pytest.raises(ConfigError, match="takes no input") as err:
        ImageClassification(IMAGE_SHAPE, CLASSES).forward(bert(16), {"input": np.zeros((1, *IMAGE_SHAPE), np.float32)})
    assert "input_ids" in err.value.hint
