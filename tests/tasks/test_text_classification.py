"""edgekd.tasks.text_classification: BERT-family inputs, forward and export by optimum."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from task_models import CLASSES, MAX_LENGTH, OPSET, TEXT_DIMS, VOCAB, bert

from edgekd.tasks import TextClassification

WITH_TYPES = ("input_ids", "attention_mask", "token_type_ids")


def test_specs_are_int64_token_inputs_and_class_logits() -> None:
    task = TextClassification(**TEXT_DIMS, input_names=list(WITH_TYPES))
    assert task.input_names == WITH_TYPES
    assert [(s.name, s.dtype, s.role, s.axes) for s in task.inputs()] == [
        (n, "int64", r, {0: "batch_size", 1: "sequence_length"})
        for n, r in zip(WITH_TYPES, ("token_ids", "attention_mask", "token_type_ids"))]
    (logits,) = task.outputs()
    assert (logits.name, logits.shape) == ("logits", ("batch_size", CLASSES))
    assert task.axis_sizes() == {"sequence_length": MAX_LENGTH}


def test_forward_equals_the_model_called_by_name() -> None:
    model, task = bert(16).eval(), TextClassification(**TEXT_DIMS, input_names=WITH_TYPES)
    ids = torch.randint(0, VOCAB, (2, 5))
    mask, types = torch.tensor([[1, 1, 1, 0, 0], [1] * 5]), torch.tensor([[0, 0, 1, 1, 1]] * 2)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = task.forward(model, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": ids[:, 0]})
    torch.testing.assert_close(got, expected)


def test_a_distilbert_student_ignores_token_types_a_bert_teacher_takes() -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    student = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=VOCAB, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=MAX_LENGTH,
        num_labels=CLASSES)).eval()
    task = TextClassification(**TEXT_DIMS, input_names=WITH_TYPES)
    batch = task.dummy_batch(2)
    with torch.no_grad():
        expected = student(input_ids=torch.from_numpy(batch["input_ids"])).logits
        torch.testing.assert_close(task.forward(student, batch), expected)
        assert task.kd_view(task.forward(bert(16).eval(), batch), batch).shape == expected.shape


def test_bert_exports_with_token_types_when_the_task_names_them(tmp_path) -> None:
    model, task = bert(16).eval(), TextClassification(**TEXT_DIMS, input_names=WITH_TYPES)
    path = tmp_path / "nested" / "bert.onnx"
    task.export(model, path, OPSET)
    assert sorted(p.name for p in path.parent.iterdir()) == ["bert.onnx"]  # no temp folder left behind
    feeds = task.dummy_inputs(2, seed=1, sequence_length=MAX_LENGTH)
    feeds["token_type_ids"][:, 4:] = 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(WITH_TYPES)
    with torch.no_grad():
        expected = task.forward(model, feeds).numpy()
    np.testing.assert_allclose(session.run(["logits"], feeds)[0], expected, atol=1e-4)


def test_inputs_from_a_tokenizer_are_fed_in_forward_order():
    """A fast tokenizer returns input_ids, token_type_ids, attention_mask; a plain module takes
    input_ids, attention_mask, token_type_ids positionally (BERT's order): the task reorders them."""
    from types import SimpleNamespace

    from edgekd.tasks.text import forward_order

    assert forward_order(["input_ids", "token_type_ids", "attention_mask"]) == ("input_ids", "attention_mask", "token_type_ids")
    spec = SimpleNamespace(inputs=[SimpleNamespace(name=n, shape=(16,)) for n in ("input_ids", "token_type_ids", "attention_mask")],
                           num_classes=3, vocab_size=50)
    dims = TextClassification.dims_from_data(spec)
    assert dims["input_names"] == ("input_ids", "attention_mask", "token_type_ids") and dims["max_length"] == 16
    assert [s.name for s in TextClassification(**dims).inputs()] == list(dims["input_names"])
