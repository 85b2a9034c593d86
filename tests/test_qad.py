"""edgekd/qad.py: quantization-aware distillation on the built-in digits data.

The PTQ-breaking case is made, not hoped for: after distillation one channel of the first block is
scaled by OUTLIER and the next conv's weights for that channel by 1/OUTLIER. ReLU is positively
homogeneous, so the float student computes the same function (checked), but its per-tensor
activation range is now set by one channel, and PTQ loses accuracy (checked). QAD must recover it,
and an identical fine-tuning with fake quantization off must not (the ablation)."""
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
from edgekd.distill.losses import hinton_kd  # noqa: E402
from edgekd.distill.trainer import distill_hinton, fit, predict, train_supervised  # noqa: E402
from edgekd.examples import digits  # noqa: E402
from edgekd.export import INPUT_NAME, export_onnx  # noqa: E402
from edgekd.qad import (_conv_bn_pairs, compare_ptq_qad, export_qad_qdq, onnx_accuracy_pt, prepare_qad,  # noqa: E402
                        qad_finetune, qad_qconfig, strip_qad)
from edgekd.quant_rules import qdq_violations  # noqa: E402
from edgekd.quantize import quantize_int8  # noqa: E402

X86 = TargetQuantize()
TENSORRT = TargetQuantize(symmetric_activations=True, quantize_bias=False)
RECIPES = {"x86": X86, "tensorrt": TENSORRT}
OUTLIER = 300.0
QAD = {"epochs": 8, "lr": 3e-4, "batch_size": 64, "temperature": 4.0, "alpha": 0.9, "seed": 0}
SHAPE = (1, 8, 8)


@dataclass
class Case:
    data: Splits
    student: torch.nn.Module  # distilled, with the planted outlier channel
    teacher_logits: np.ndarray  # on the train split
    float_accuracy_pt: float
    ptq: dict[str, Path]  # recipe name -> the quantize stage's INT8 graph of `student`
    tmp: Path


def _accuracy_pt(model: torch.nn.Module, data: Splits) -> float:
    return float((predict(model, data.test.x).argmax(1) == data.test.y).mean() * 100)


def _plant_outlier(student: torch.nn.Sequential, x: np.ndarray) -> int:
    """Scale the most active channel after block 1 (BN 1) by OUTLIER, the next conv's input by 1/OUTLIER."""
    with torch.no_grad():
        channel = int(student[:3](torch.from_numpy(x)).mean(dim=(0, 2, 3)).argmax())
        student[1].weight[channel] *= OUTLIER
        student[1].bias[channel] *= OUTLIER
        student[3].weight[:, channel] /= OUTLIER
    return channel


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Case]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny CNN: extra threads only contend on a shared CI box
    try:
        data = digits.load()
        teacher = digits.teacher(width=8)
        train_supervised(teacher, data.train, TrainConfig(epochs=8, lr=3e-3, seed=0))
        student = digits.student(width=8)
        distill_hinton(student, teacher, data.train, DistillConfig(epochs=12, lr=4e-3, seed=0))
        before = predict(student, data.test.x)
        _plant_outlier(student, data.train.x)
        np.testing.assert_allclose(predict(student, data.test.x), before, rtol=1e-3, atol=1e-3)  # same function
        tmp = tmp_path_factory.mktemp("qad")
        export_onnx(student, SHAPE, tmp / "student.onnx", 18)
        ptq = {}
        for name, recipe in RECIPES.items():
            ptq[name] = tmp / f"ptq_{name}.onnx"
            quantize_int8(tmp / "student.onnx", ptq[name], data.calib.x, INPUT_NAME, QuantizeConfig(), recipe)
        yield Case(data, student, predict(teacher, data.train.x), _accuracy_pt(student, data), ptq, tmp)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(RECIPES))
def test_qad_recovers_what_ptq_loses(case: Case, name: str) -> None:
    recipe = RECIPES[name]
    qad = qad_finetune(case.student, case.teacher_logits, case.data.train, recipe, **QAD)
    path = case.tmp / f"qad_{name}.onnx"
    assert export_qad_qdq(qad, SHAPE, path, recipe, case.data.calib.x) == []
    result = compare_ptq_qad(case.ptq[name], path, case.data.test)
    print(f"\n[{name}] float {case.float_accuracy_pt:.2f} %; {result.describe()}")
    assert case.float_accuracy_pt - result.ptq_accuracy_pt > 5.0, "the planted outlier should break PTQ"
    assert result.qad_accuracy_pt >= result.ptq_accuracy_pt - 0.5
    assert result.recovered_pt > 0.5 * (case.float_accuracy_pt - result.ptq_accuracy_pt)  # at least half the loss back
    assert result.samples == len(case.data.test)


def test_fake_quantization_is_what_recovers(case: Case) -> None:
    """The ablation: the same fine-tuning (KD, frozen BN, same seed and schedule), fake quantization off."""
    model = prepare_qad(copy.deepcopy(case.student), TENSORRT)
    model.apply(disable_fake_quant)
    soft = torch.from_numpy(case.teacher_logits)
    fit(model, case.data.train, QAD["epochs"], QAD["lr"], QAD["batch_size"], QAD["seed"],
        lambda xb, yb, idx: hinton_kd(model(xb), soft[idx], yb, QAD["temperature"], QAD["alpha"]), "ablation")
    path = case.tmp / "float_finetune_tensorrt.onnx"
    assert export_qad_qdq(strip_qad(model), SHAPE, path, TENSORRT, case.data.calib.x) == []
    plain = onnx_accuracy_pt(path, case.data.test)
    qad_path = case.tmp / "qad_tensorrt.onnx"
    if not qad_path.exists():
        pytest.skip("needs test_qad_recovers_what_ptq_loses[tensorrt] first")
    qad = onnx_accuracy_pt(qad_path, case.data.test)
    print(f"\n[tensorrt] PTQ after float fine-tuning {plain:.2f} % vs QAD {qad:.2f} %")
    assert qad > plain + 5.0


@pytest.mark.parametrize("name", list(RECIPES))
def test_simulated_weights_are_the_exported_ones(case: Case, name: str) -> None:
    """The first conv's fake-quantized (BN-folded) weight equals the exported graph's dequantized int8 weight."""
    path = case.ptq[name]
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    q, scale = inits[dq.input[0]].astype(np.float32), inits[dq.input[1]]
    exported = q * scale.reshape(-1, 1, 1, 1)
    conv0, bn = case.student[0], case.student[1]
    folded = conv0.weight * (bn.weight / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
    simulated = qad_qconfig(RECIPES[name]).weight()(folded.detach()).numpy()
    np.testing.assert_allclose(simulated, exported, rtol=1e-5, atol=1e-7)


def test_the_student_comes_back_float_with_its_own_layout(case: Case) -> None:
    original = {k: v.clone() for k, v in case.student.state_dict().items()}
    model = prepare_qad(copy.deepcopy(case.student), X86)
    assert len([m for m in model.modules() if type(m).__name__ == "_FakeQuantLayer"]) == 4
    with pytest.raises(ValueError, match="fake-quant"):
        export_qad_qdq(model, SHAPE, case.tmp / "never.onnx", X86, case.data.calib.x)
    tuned = qad_finetune(case.student, case.teacher_logits, case.data.train, X86, **{**QAD, "epochs": 1})
    assert tuned.state_dict().keys() == digits.student(width=8).state_dict().keys()
    assert not tuned.training and not any("fake" in type(m).__name__.lower() for m in tuned.modules())
    assert all(torch.equal(v, case.student.state_dict()[k]) for k, v in original.items())  # input untouched


def test_bad_inputs_are_refused(case: Case) -> None:
    with pytest.raises(ValueError, match="one row per sample"):
        qad_finetune(case.student, case.teacher_logits[:10], case.data.train, X86, **QAD)
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
