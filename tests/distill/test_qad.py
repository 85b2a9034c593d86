"""edgekd/distill/qad.py: quantization-aware distillation on the built-in digits data.

The PTQ-breaking case is made, not hoped for: after distillation the least active (live) channel of
the first block is scaled up until its largest activation is OUTLIER x the block's largest, and the
next conv's weights for that channel are scaled down by the same factor. ReLU is positively
homogeneous, so the float student computes the same function (checked), but the per-tensor
activation range of that tensor is now set by one channel that carries little, and PTQ loses
accuracy (checked). QAD must recover at least half of the loss, and the identical fine-tuning with
fake quantization off must do clearly worse (the ablation)."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from torch.ao.quantization import disable_fake_quant  # noqa: E402

from edgekd.config.models import DistillConfig, QuantizeConfig, TrainConfig  # noqa: E402
from edgekd.config.target import TargetQuantize  # noqa: E402
from edgekd.data import Splits  # noqa: E402
from edgekd.data.sources import SplitsSource  # noqa: E402
from edgekd.distill.losses import hinton_kd  # noqa: E402
from edgekd.distill.qad import (  # noqa: E402
    QadSettings,
    _conv_bn_pairs,
    compare_ptq_qad,
    export_qad_qdq,
    onnx_accuracy_pt,
    prepare_qad,
    qad_finetune,
    qad_qconfig,
    strip_qad,
)
from edgekd.distill.streaming import TrainData  # noqa: E402
from edgekd.distill.teaching import Teaching, rows_at  # noqa: E402
from edgekd.distill.trainer import (  # noqa: E402
    FitPlan,
    build_objective,
    distill,
    fit,
    train_supervised,
)
from edgekd.examples import digits  # noqa: E402
from edgekd.graph.export import INPUT_NAME, export_onnx  # noqa: E402
from edgekd.graph.quant_rules import qdq_violations  # noqa: E402
from edgekd.graph.quantize import quantize_int8  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402

X86 = TargetQuantize()
TENSORRT = TargetQuantize(symmetric_activations=True, quantize_bias=False)
RECIPES = {"x86": X86, "tensorrt": TENSORRT}
OUTLIER = 300.0  # the planted channel's peak activation, in multiples of the block's
QAD = QadSettings(epochs=8, lr=3e-4, batch_size=64, temperature=4.0, alpha=0.9, seed=0)
SHAPE = (1, 8, 8)
TASK = get_task("image-classification", input_shape=SHAPE, num_classes=10)


def predict(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    return TASK.predict(model, {"input": x})


@dataclass
class Case:
    data: Splits
    train: TrainData  # data's train split, streamed
    student: torch.nn.Module  # distilled, with the planted outlier channel
    teacher_logits: np.ndarray  # on the train split
    float_accuracy_pt: float
    ptq: dict[str, Path]  # recipe name -> the quantize stage's INT8 graph of `student`
    tmp: Path
    state: dict[str, torch.Tensor]  # `student`'s weights, to check QAD leaves them alone


def _accuracy_pt(model: torch.nn.Module, data: Splits) -> float:
    return float((predict(model, data.test.x).argmax(1) == data.test.y).mean() * 100)


def _plant_outlier(student: torch.nn.Sequential, x: np.ndarray) -> None:
    """Block 1's least active live channel scaled by k (BN 1), the next conv's input by 1/k: same function."""
    with torch.no_grad():
        act = student[:3](torch.from_numpy(x))
        peak, mean = act.amax(dim=(0, 2, 3)), act.mean(dim=(0, 2, 3))
        channel = int(torch.where(peak > 0.05 * peak.max(), mean, torch.full_like(mean, np.inf)).argmin())
        k = float(OUTLIER * peak.max() / peak[channel])
        student[1].weight[channel] *= k
        student[1].bias[channel] *= k
        student[3].weight[:, channel] /= k


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny CNN: extra threads only contend on a shared CI box
    try:
        data = digits.load()
        train = TrainData(SplitsSource(data), TASK)
        torch.manual_seed(0)  # the factories draw the initial weights from the global generator
        teacher = digits.teacher(width=8)
        train_supervised(teacher, train, TrainConfig(epochs=8, lr=3e-3, seed=0))
        teacher_logits = predict(teacher, data.train.x)
        student = digits.student(width=8)
        cfg = DistillConfig(epochs=12, lr=4e-3, seed=0)
        distill(student, train, cfg, build_objective(cfg), Teaching(logits=teacher_logits))
        before = predict(student, data.test.x)
        _plant_outlier(student, data.train.x)
        np.testing.assert_allclose(predict(student, data.test.x), before, rtol=1e-3, atol=1e-3)  # same function
        tmp = tmp_path_factory.mktemp("qad")
        export_onnx(student, SHAPE, tmp / "student.onnx", 18)
        ptq = {}
        for name, recipe in RECIPES.items():
            ptq[name] = tmp / f"ptq_{name}.onnx"
            quantize_int8(tmp / "student.onnx", ptq[name], {INPUT_NAME: data.calib.x}, QuantizeConfig(), recipe)
        state = {k: v.clone() for k, v in student.state_dict().items()}
        yield Case(data, train, student, teacher_logits, _accuracy_pt(student, data), ptq, tmp, state)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def qad(case: Case) -> dict[str, tuple[torch.nn.Module, Path, list[str]]]:
    """Recipe name -> (QAD student, its exported Q/DQ graph, that graph's rule violations)."""
    runs = {}
    for name, recipe in RECIPES.items():
        model = qad_finetune(case.student, case.train, case.teacher_logits, recipe, QAD)
        path = case.tmp / f"qad_{name}.onnx"
        runs[name] = (model, path, export_qad_qdq(model, SHAPE, path, recipe, case.data.calib.x))
    return runs


@pytest.mark.parametrize("name", list(RECIPES))
def test_qad_recovers_what_ptq_loses(case: Case, qad: dict, name: str) -> None:
    _, path, violations = qad[name]
    assert violations == []
    assert qdq_violations(onnx.load(str(path)), RECIPES[name]) == []
    result = compare_ptq_qad(case.ptq[name], path, {INPUT_NAME: case.data.test.x}, case.data.test.y)
    print(f"\n[{name}] float {case.float_accuracy_pt:.2f} %; {result.describe()}")
    assert case.float_accuracy_pt - result.ptq_accuracy_pt > 5.0, "the planted outlier should break PTQ"
    assert result.qad_accuracy_pt >= result.ptq_accuracy_pt - 0.5
    assert result.recovered_pt > 0.5 * (case.float_accuracy_pt - result.ptq_accuracy_pt)  # at least half the loss back
    assert result.samples == len(case.data.test)


def test_fake_quantization_is_what_recovers(case: Case, qad: dict) -> None:
    """The ablation: the same fine-tuning (KD, frozen BN, same seed and schedule), fake quantization off."""
    model = prepare_qad(copy.deepcopy(case.student), TENSORRT)
    model.apply(disable_fake_quant)
    fit(model, case.train, FitPlan(QAD.epochs, QAD.lr, QAD.batch_size, QAD.seed, "ablation"),
        lambda b, _: hinton_kd(model(b["input"]), rows_at(case.teacher_logits, b["index"]), b["labels"], QAD.temperature, QAD.alpha))
    path = case.tmp / "float_finetune_tensorrt.onnx"
    assert export_qad_qdq(strip_qad(model), SHAPE, path, TENSORRT, case.data.calib.x) == []
    test = ({INPUT_NAME: case.data.test.x}, case.data.test.y)
    plain = onnx_accuracy_pt(path, *test)
    with_fake_quant = onnx_accuracy_pt(qad["tensorrt"][1], *test)
    print(f"\n[tensorrt] PTQ after float fine-tuning {plain:.2f} % vs QAD {with_fake_quant:.2f} %")
    assert with_fake_quant > plain + 5.0


def _dequantized_weight(model: onnx.ModelProto, op_type: str) -> np.ndarray:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == op_type)
    dq = next(n for n in model.graph.node if n.output[0] == node.input[1])
    q, scale = inits[dq.input[0]].astype(np.float32), inits[dq.input[1]]
    return q * scale.reshape((-1,) + (1,) * (q.ndim - 1))


@pytest.mark.parametrize("name", list(RECIPES))
def test_simulated_weights_are_the_exported_ones(case: Case, name: str) -> None:
    """The fake-quantized weights (the first conv's BN-folded, the head's) equal the exported graph's
    dequantized int8 weights: the simulated grid is the one ONNX Runtime runs."""
    model, weight_fq = onnx.load(str(case.ptq[name])), qad_qconfig(RECIPES[name]).weight
    conv, bn, head = case.student[0], case.student[1], case.student[12]
    folded = conv.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    for op_type, weight in (("Conv", folded), ("Gemm", head.weight)):
        simulated = weight_fq()(weight.detach()).numpy()
        np.testing.assert_allclose(simulated, _dequantized_weight(model, op_type), rtol=1e-5, atol=1e-7)


def test_the_student_comes_back_float_with_its_own_layout(case: Case, qad: dict) -> None:
    model = prepare_qad(copy.deepcopy(case.student), X86)
    assert len([m for m in model.modules() if type(m).__name__ == "_FakeQuantLayer"]) == 4
    with pytest.raises(ValueError, match="fake-quant"):
        export_qad_qdq(model, SHAPE, case.tmp / "never.onnx", X86, case.data.calib.x)
    tuned = qad["x86"][0]
    assert tuned.state_dict().keys() == digits.student(width=8).state_dict().keys()
    assert not tuned.training and not any("fake" in type(m).__name__.lower() for m in tuned.modules())
    assert type(case.student[0]) is torch.nn.Conv2d  # the input student is left as it was
    assert all(torch.equal(v, case.state[k]) for k, v in case.student.state_dict().items())
    assert not torch.equal(tuned[0].weight, case.student[0].weight)


def test_bad_inputs_are_refused(case: Case) -> None:
    with pytest.raises(ValueError, match="zero point 128"):
        qad_qconfig(TargetQuantize(activation_type="uint8", symmetric_activations=True))
    with pytest.raises(ValueError, match="one row per sample"):
        qad_finetune(case.student, case.train, case.teacher_logits[:10], X86, QAD)
    with pytest.raises(ValueError, match="quantize_for_htp"):
        export_qad_qdq(case.student, SHAPE, case.tmp / "never.onnx", TargetQuantize(static_batch=1), case.data.calib.x)


def test_conv_bn_pairs_are_found() -> None:
    assert _conv_bn_pairs(digits.student(width=8)) == {"0": "1", "3": "4", "7": "8"}


@pytest.mark.parametrize(("recipe", "activation", "weight"), [
    (X86, (-128, 127, torch.per_tensor_affine), (-127, 127, torch.per_channel_symmetric)),
    (TENSORRT, (-127, 127, torch.per_tensor_symmetric), (-127, 127, torch.per_channel_symmetric)),
    (TargetQuantize(activation_type="uint8", weight_type="uint8", per_channel=False, reduce_range=True,
                    symmetric_weights=False), (0, 255, torch.per_tensor_affine), (0, 127, torch.per_tensor_affine)),
])
def test_qconfig_uses_onnxruntime_ranges(recipe: TargetQuantize, activation: tuple, weight: tuple) -> None:
    qconfig = qad_qconfig(recipe)
    for fq, (qmin, qmax, qscheme) in ((qconfig.activation(), activation), (qconfig.weight(), weight)):
        assert (fq.quant_min, fq.quant_max, fq.qscheme) == (qmin, qmax, qscheme)
