"""edgekd.tasks.causal_lm: next-token rows, the loss against transformers' own, perplexity, export."""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from task_models import LM_DIMS, OPSET, VOCAB, gpt2

from edgekd.errors import DataError
from edgekd.tasks import CausalLM


def position_logits(batch: int, length: int) -> torch.Tensor:
    """logits[b, t] = [b, t, 0, ...]: each row says where it came from."""
    logits = torch.zeros(batch, length, VOCAB)
    logits[..., 0] = torch.arange(batch).unsqueeze(1).float()
    logits[..., 1] = torch.arange(length).float()
    return logits


BATCH = {"input_ids": np.array([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]]),
         "attention_mask": np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
         "labels": np.array([[-100, -100, 11, 12, 13], [21, 22, 23, -100, 25]])}


def test_kd_view_keeps_the_positions_that_predict_a_real_scored_token() -> None:
    task = CausalLM(**LM_DIMS)
    rows = task.kd_view(position_logits(2, 5), BATCH)
    assert rows[:, :2].tolist() == [[0, 2], [0, 3], [1, 0], [1, 1], [1, 3]]
    assert task.kd_labels(BATCH).tolist() == [12, 13, 22, 23, 25]


def test_without_labels_the_input_ids_are_the_targets() -> None:
    task = CausalLM(**LM_DIMS)
    batch = {"input_ids": BATCH["input_ids"], "attention_mask": BATCH["attention_mask"]}
    assert task.kd_labels(batch).tolist() == [12, 13, 22, 23, 24, 25]


def test_logits_that_do_not_match_the_batch_are_refused() -> None:
    with pytest.raises(ValueError, match="do not match"):
        CausalLM(**LM_DIMS).kd_view(position_logits(2, 4), BATCH)


def test_task_loss_and_perplexity_match_transformers_own_loss() -> None:
    model, task = gpt2(16).eval(), CausalLM(**LM_DIMS)
    ids = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[1, 4] = -100
    batch = {"input_ids": ids, "labels": labels}
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).loss
        logits = task.forward(model, batch)
    torch.testing.assert_close(task.task_loss(logits, batch), expected)
    state = task.metric_state()
    state.update(logits, batch)
    assert state.count == 3 * 8 - 1 and state.value() == pytest.approx(math.exp(expected.item()), rel=1e-5)


def test_a_batch_with_nothing_to_predict_is_a_data_error() -> None:
    batch = {"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.array([[1, 0, 0, 0], [0, 0, 0, 1]])}
    with pytest.raises(DataError, match="no next token"):
        CausalLM(**LM_DIMS).task_loss(position_logits(2, 4), batch)


def test_gpt2_exports_with_position_ids_and_left_padding_runs_like_torch(tmp_path) -> None:
    model = gpt2(16).eval()
    task = CausalLM(**LM_DIMS, input_names=("input_ids", "attention_mask", "position_ids"))
    task.export(model, tmp_path / "lm.onnx", OPSET)
    batch = task.dummy_inputs(2, sequence_length=7)
    batch["attention_mask"][0, :3] = 0
    feeds = {name: t.numpy() for name, t in task.feed(batch).items()}
    session = ort.InferenceSession(str(tmp_path / "lm.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "position_ids"]
    (logits,) = session.run(["logits"], feeds)
    with torch.no_grad():
        expected = task.forward(model, batch).numpy()
    keep = batch["attention_mask"].astype(bool)  # padded positions are not compared
    np.testing.assert_allclose(logits[keep], expected[keep], atol=1e-4)
