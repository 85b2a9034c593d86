"""Every registered task, with tiny real models (timm style: parametrized over the registry)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from pydantic import ValidationError
from task_models import CASES, OPSET, Case, padded

from edgekd.distill.losses import LOSSES, LossInputs
from edgekd.tasks import BATCH_AXIS, TASKS, task_names

CASE_IDS = [c.id for c in CASES]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


def test_every_registered_task_has_a_case() -> None:
    assert sorted({c.task_name for c in CASES}) == task_names() == sorted(TASKS)


def resolved_shape(shape: tuple, batch: int, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(batch if d == BATCH_AXIS else dims[d] if isinstance(d, str) else d for d in shape)


def test_dummy_inputs_match_the_specs(case: Case) -> None:
    task = case.task()
    dims = {name: 5 for name in task.axis_sizes()}
    feeds = task.dummy_inputs(3, **dims)
    assert list(feeds) == [s.name for s in task.inputs()]
    for spec in task.inputs():
        value = feeds[spec.name]
        assert value.dtype == np.dtype(spec.dtype) and value.shape == resolved_shape(spec.shape, 3, dims)
        if spec.role == "token_ids":
            assert value.min() >= 0 and value.max() < task.vocab_size
        if spec.role == "attention_mask":
            assert (value == 1).all()
    assert {i.name: i.shape for i in task.model_inputs(3, **dims).inputs} == {n: v.shape for n, v in feeds.items()}


def test_forward_gives_logits_of_the_output_spec(case: Case) -> None:
    task, model = case.task(), case.model().eval()
    dims = {name: 6 for name in task.axis_sizes()}
    batch = {**task.dummy_batch(2, **dims), "index": np.array([7, 8])}  # not a model input: ignored
    logits = task.forward(model, batch)
    assert tuple(logits.shape) == resolved_shape(task.outputs()[0].shape, 2, dims)
    assert torch.isfinite(logits).all()


def test_task_loss_is_a_finite_scalar_with_gradients(case: Case) -> None:
    task, model = case.task(), case.model()
    batch = padded(task.dummy_batch(4), task)
    loss = task.task_loss(task.forward(model, batch), batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_kd_view_rows_line_up_between_teacher_and_student(case: Case) -> None:
    task = case.task()
    teacher, student = case.model(width=32, seed=1).eval(), case.model(width=16, seed=2).eval()
    batch = padded(task.dummy_batch(3), task)
    t_view = task.kd_view(task.forward(teacher, batch), batch)
    s_view = task.kd_view(task.forward(student, batch), batch)
    labels = task.kd_labels(batch)
    assert t_view.dim() == s_view.dim() == 2 and t_view.shape == s_view.shape
    assert labels.shape == (t_view.shape[0],) and labels.dtype == torch.int64
    assert 0 < t_view.shape[0]


LOSS_NAMES = sorted(LOSSES)


@pytest.mark.parametrize("loss_name", LOSS_NAMES)
def test_every_logit_loss_runs_on_the_kd_view(case: Case, loss_name: str) -> None:
    try:
        loss = LOSSES[loss_name]()
    except ValidationError:
        pytest.skip(f"loss '{loss_name}' needs params naming feature layers; it does not work on logits alone")
    if loss.student_layers() or loss.teacher_layers():
        pytest.skip(f"loss '{loss_name}' needs captured features")
    task = case.task()
    teacher, student = case.model(width=32, seed=1).eval(), case.model(width=16, seed=2)
    batch = padded(task.dummy_batch(3), task)
    with torch.no_grad():
        t_view = task.kd_view(task.forward(teacher, batch), batch)
    s_view = task.kd_view(task.forward(student, batch), batch)
    value = loss(LossInputs(s_view, t_view, task.kd_labels(batch), {}, {}))
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert any(p.grad is not None for p in student.parameters())


def test_streaming_metric_equals_the_metric_on_all_batches_at_once(case: Case) -> None:
    task, model = case.task(), case.model().eval()
    batches = [padded(task.dummy_batch(3, seed=s), task) for s in range(3)]
    streamed, whole = task.metric_state(), task.metric_state()
    with torch.no_grad():
        for batch in batches:
            streamed.update(task.forward(model, batch), batch)
        everything = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
        whole.update(task.forward(model, everything), everything)
    assert streamed.count == whole.count > 0
    assert streamed.value() == pytest.approx(whole.value(), rel=1e-9)


EXPECTED_METRIC = {"image-classification": ("accuracy_drop_pt", True),
                   "text-classification": ("accuracy_drop_pt", True),
                   "causal-lm": ("perplexity_increase_pct", False)}


def test_metric_direction_and_budget_name(case: Case) -> None:
    metric = case.task().metric
    assert (metric.degradation_name, metric.higher_is_better) == EXPECTED_METRIC[case.task_name]
    worse_after = 1.0 if metric.higher_is_better else 3.0
    assert metric.degradation(2.0, worse_after) > 0 and metric.degradation(worse_after, 2.0) < 0


def test_export_runs_in_onnxruntime_like_torch(case: Case, tmp_path) -> None:
    task, model = case.task(), case.model().eval()
    path = tmp_path / "model.onnx"
    task.export(model, path, OPSET)
    graph = onnx.load(str(path)).graph
    declared = {i.name: i.type.tensor_type for i in graph.input}
    assert list(declared) == [s.name for s in task.inputs()]
    for spec in (*task.inputs(), *task.outputs()):
        value = next(v for v in (*graph.input, *graph.output) if v.name == spec.name).type.tensor_type
        assert onnx.helper.tensor_dtype_to_np_dtype(value.elem_type) == np.dtype(spec.dtype)
        assert {i: d.dim_param for i, d in enumerate(value.shape.dim) if d.dim_param} == spec.axes
    feeds = task.dummy_inputs(3, seed=5, **{name: 5 for name in task.axis_sizes()})  # not the export's example dims
    (onnx_logits,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], feeds)
    with torch.no_grad():
        expected = task.forward(model, feeds).numpy()
    np.testing.assert_allclose(onnx_logits, expected, atol=1e-4, rtol=1e-4)


EXPECTED_SCENARIOS = {"image-classification": ("SingleStream", "Offline"),
                      "text-classification": ("SingleStream", "Offline"),
                      "causal-lm": ("SingleStream", "Offline", "TimeToFirstToken", "DecodeTokensPerSecond")}


def test_latency_scenarios(case: Case) -> None:
    assert case.task().latency_scenarios() == EXPECTED_SCENARIOS[case.task_name]
