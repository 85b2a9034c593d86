"""Quantization-aware distillation (QAD): fine-tune the float student under fake quantization that
matches the target's Q/DQ recipe, with the teacher's cached soft labels, then quantize it for the
target exactly like the quantize stage does.

Entry points: `qad_finetune` (returns the fine-tuned float student), `export_qad_qdq` (the target's
Q/DQ ONNX from it, with its rule violations) and `compare_ptq_qad` (both INT8 graphs measured with
ONNX Runtime on the test split).

Choices, and why:

- Fake quantization is torch's own: `torch.ao.quantization.FakeQuantize` modules with
  `MovingAverageMinMaxObserver` (activations) and `MovingAveragePerChannelMinMaxObserver` /
  `MovingAverageMinMaxObserver` (weights), built into a `QConfig` from the recipe (`qad_qconfig`).
  Integer ranges follow onnxruntime.quantization, not torch's defaults, so that the simulated grid
  is the one the exported graph runs: symmetric int8 is [-127, 127] (ORT's symmetric range),
  `reduce_range` weights are 7-bit ([-64, 64] / [0, 127]), activations never take `reduce_range`
  (ORT applies it to weights only). Weight observers use averaging constant 1.0: each forward pass
  quantizes the current weights with their own min/max, as ORT does at export. Symmetric uint8/uint16
  recipes are refused: ORT gives them zero point 128/32768, which `qdq_violations` rejects anyway.
- Where: every Conv1d/2d/3d and Linear gets a small wrapper (`_FakeQuantLayer`) that fake-quantizes
  its input and its weight, and the logits are fake-quantized. That is where ORT's QDQ quantizer puts
  Q/DQ in a conv/linear/ReLU/pool student (the input, each ReLU output, which pooling and flatten
  share, and the final Gemm output). Ops ORT quantizes on their own (Add, Concat, ...) are not
  simulated: their Q/DQ still comes from calibration at export. `prepare_qat_fx` was not used: its
  fused `ConvBnReLU2d` modules do not map back onto the student's own layout, and the student must
  come back as the same module tree so the pipeline can save and reload it through its factory.
- BatchNorm: ORT quantizes the weights after Conv+BN folding (the exporter folds BN). A Conv followed
  by a BatchNorm (found with `torch.fx.symbolic_trace`; no pairing where tracing fails) is
  fake-quantized as folded: `fq(w * s) / s` with `s = gamma / sqrt(running_var + eps)`, the
  formulation of torch's `nniqat.ConvBn2d`. BN statistics are frozen during QAD (eval mode; gamma and
  beta still train), standard practice when fine-tuning a trained model under QAT. With per-channel
  symmetric weights the fold changes nothing (a per-channel positive/negative scale commutes with
  symmetric per-channel quantization); with per-tensor or asymmetric weights it does matter.
- Not simulated: int32 bias quantization (scale = input scale x weight scale; its error is far below
  the 8-bit one).
- Before training, one pass over (up to 1,024 seeded rows of) the train split, the first batch of the
  source in seeded order, with fake quantization off and observers on sets the activation ranges the
  way ORT's MinMax calibration does (float activations, min/max over the batch); training then tracks
  them with the observers' moving average.
- Training: `edgekd.distill.trainer.fit` (AdamW + cosine, the source's seeded batches streamed through
  the task, no augmentation) with `hinton_kd` on the task's KD view against the given teacher logits
  (rows by batch["index"]: the memory-mapped cache); `fit` fits as is, since BN is frozen by the
  wrapper model's `train()`.
  Use a small learning rate, about a tenth of the distillation one: on the digits student with a
  planted activation outlier, lr 3e-4 (8 epochs) recovered most of PTQ's loss, while 3e-3 (near the
  distill lr of 4e-3) left the QAD student at 63 % float accuracy (float fine-tuning at 3e-3: fine).
- Export route: "fold", not the fake-quant graph. The trained float weights go through the pipeline's
  own export (`export_onnx`, dynamo) and `quantize_int8` (ORT `quantize_static`, same recipe,
  calibrated on the calibration samples), so the graph has exactly the quantize stage's format:
  int8 weight initializers, int32 biases only where the recipe takes them, and it passes
  `qdq_violations`. Exporting the fake-quant graph directly does not work with torch 2.13's dynamo
  exporter: `FakeQuantize.forward` branches on its enabled flags (torch.export fails on the
  data-dependent condition); the bare `fake_quantize_per_*_affine` ops export only for (-128, 127),
  (0, 255), (0, 127) ranges (not ORT's symmetric [-127, 127]) and give float weights quantized at
  run time (Q -> DQ on every weight) with float biases, a different format from the quantize stage's.
  The legacy TorchScript exporter (dynamo=False) failed too: `aten::copy` (the observers' buffer
  updates) has no ONNX export.

torch is imported at module level (like `edgekd.distill.trainer`): import this module inside the
stage that uses it, so a fully cached build never loads torch.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import (
    FakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
    disable_fake_quant,
    enable_fake_quant,
)
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from edgekd.common.tempdirs import temp_dir
from edgekd.config.target import TargetQuantize
from edgekd.data.sources import INDEX
from edgekd.distill.losses import hinton_kd
from edgekd.distill.streaming import TrainData, count_samples, first_batch
from edgekd.distill.teaching import rows_at
from edgekd.distill.trainer import FitPlan, fit, to_tensors

CALIBRATION_ROWS = 1024  # rows of the train split that set the activation ranges before training
_EPS = 1e-12


def _qrange(kind: str, symmetric: bool, reduce_range: bool) -> tuple[int, int]:
    """The integer range onnxruntime.quantization uses (quant_utils.get_qmin_qmax_for_qType)."""
    if kind == "uint16":
        return (0, 32767) if reduce_range else (0, 65535)
    if kind == "uint8":
        return (0, 127) if reduce_range else (0, 255)
    if reduce_range:
        return -64, 64
    return (-127, 127) if symmetric else (-128, 127)


def qad_qconfig(recipe: TargetQuantize) -> QConfig:
    """A torch QConfig whose fake quantization simulates `recipe` as ORT's quantize_static applies it."""
    def dtype(kind: str) -> torch.dtype:  # torch's observers take qint32 for a 16-bit range
        return {"int8": torch.qint8, "uint8": torch.quint8, "uint16": torch.qint32}[kind]

    for kind, symmetric in ((recipe.activation_type, recipe.symmetric_activations), (recipe.weight_type, recipe.symmetric_weights)):
        if symmetric and kind != "int8":
            raise ValueError(f"symmetric {kind} has ORT zero point {32768 if kind == 'uint16' else 128}; "
                             "the Q/DQ rules take symmetric as zero point 0 (int8 only)")
    a_min, a_max = _qrange(recipe.activation_type, recipe.symmetric_activations, reduce_range=False)
    activation = FakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver, quant_min=a_min, quant_max=a_max, dtype=dtype(recipe.activation_type),
        qscheme=torch.per_tensor_symmetric if recipe.symmetric_activations else torch.per_tensor_affine)
    w_min, w_max = _qrange(recipe.weight_type, recipe.symmetric_weights, recipe.reduce_range)
    if recipe.per_channel:
        observer = MovingAveragePerChannelMinMaxObserver.with_args(ch_axis=0)
        qscheme = torch.per_channel_symmetric if recipe.symmetric_weights else torch.per_channel_affine
    else:
        observer = MovingAverageMinMaxObserver
        qscheme = torch.per_tensor_symmetric if recipe.symmetric_weights else torch.per_tensor_affine
    weight = FakeQuantize.with_args(observer=observer, averaging_constant=1.0, quant_min=w_min, quant_max=w_max,
                                    dtype=dtype(recipe.weight_type), qscheme=qscheme)
    return QConfig(activation=activation, weight=weight)


_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _FakeQuantLayer(nn.Module):
    """A Conv/Linear whose input and (BN-folded) weight are fake-quantized; `layer` keeps the float
    parameters and is what `strip_qad` puts back."""

    def __init__(self, layer: nn.Module, qconfig: QConfig, bn: _BatchNorm | None) -> None:
        super().__init__()
        self.layer = layer
        self.input_fq = qconfig.activation()
        self.weight_fq = qconfig.weight()
        self._bn = (bn,)  # a tuple: the BN stays registered only where it lives in the student

    def quantized_weight(self) -> torch.Tensor:
        weight, bn = self.layer.weight, self._bn[0]
        if bn is None:
            return self.weight_fq(weight)
        gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
        scale = gamma / torch.sqrt(bn.running_var + bn.eps)
        scale = torch.where(scale.abs() < _EPS, torch.full_like(scale, _EPS), scale)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        return self.weight_fq(weight * scale.reshape(shape)) / scale.reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_fq(x)
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, self.quantized_weight(), self.layer.bias)
        return self.layer._conv_forward(x, self.quantized_weight(), self.layer.bias)


class _QadModel(nn.Module):
    """The student with fake-quantized logits; `train()` keeps every BatchNorm in eval mode."""

    def __init__(self, student: nn.Module, qconfig: QConfig) -> None:
        super().__init__()
        self.student = student
        self.output_fq = qconfig.activation()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.student(*inputs)
        return self.output_fq(out.logits if hasattr(out, "logits") else out)

    def train(self, mode: bool = True) -> _QadModel:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
        return self


def _conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """Conv module name -> name of the BatchNorm that alone consumes its output (empty if fx cannot trace)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any trace failure only means "no BN folding is simulated"
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _CONVS):
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(modules.get(users[0].target), _BatchNorm):
            pairs[node.target] = users[0].target
    return pairs


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def prepare_qad(student: nn.Module, recipe: TargetQuantize) -> nn.Module:
    """Wrap `student` in place (Conv/Linear -> fake-quant wrappers) and return the QAD model around it."""
    qconfig = qad_qconfig(recipe)
    pairs = _conv_bn_pairs(student)
    modules = dict(student.named_modules())
    targets = [name for name, m in modules.items() if name and isinstance(m, _LAYERS)]
    if not targets:
        raise ValueError("the student has no Conv or Linear layer to fake-quantize")
    for name in targets:
        bn = modules[pairs[name]] if name in pairs else None
        _replace(student, name, _FakeQuantLayer(modules[name], qconfig, bn))
    return _QadModel(student, qconfig)


def strip_qad(qad_model: nn.Module) -> nn.Module:
    """The float student inside a QAD model, every wrapper replaced by its own trained layer."""
    student = qad_model.student
    for name, module in list(student.named_modules()):
        if isinstance(module, _FakeQuantLayer):
            _replace(student, name, module.layer)
    return student.eval()


def _calibrate(qad_model: nn.Module, data: TrainData, seed: int) -> None:
    """Activation ranges from the first CALIBRATION_ROWS samples of the train split in the seeded order."""
    batch = to_tensors(first_batch(data.source, CALIBRATION_ROWS, seed=seed))
    qad_model.eval()
    qad_model.apply(disable_fake_quant)
    with torch.no_grad():
        data.task.forward(qad_model, batch)
    qad_model.apply(enable_fake_quant)


@dataclass(frozen=True)
class QadSettings:
    """The fine-tuning: its length and learning rate (about a tenth of the distillation's), the
    batch size and seed, and Hinton KD's temperature and alpha."""

    epochs: int
    lr: float
    batch_size: int
    temperature: float
    alpha: float
    seed: int


def qad_finetune(student: nn.Module, data: TrainData, teacher_logits: np.ndarray, recipe: TargetQuantize,
                 settings: QadSettings) -> nn.Module:
    """Fine-tune a copy of `student` with fake quantization for `recipe` and Hinton KD against
    `teacher_logits` (one row per train sample of `data.source`, e.g. the memory-mapped teacher-logit
    cache), streaming the train split through `data.task` without augmentation.

    Returns the float student (same module tree as `student`, which is left unchanged), in eval mode."""
    rows = count_samples(data.source)
    if teacher_logits.ndim < 2 or len(teacher_logits) != rows:
        raise ValueError(f"teacher_logits has shape {teacher_logits.shape}, expected ({rows}, classes): one row per sample")
    data = TrainData(data.source, data.task)  # QAD fine-tunes against the cached logits: no augmentation
    task, s = data.task, settings
    torch.manual_seed(s.seed)
    model = prepare_qad(copy.deepcopy(student), recipe)
    _calibrate(model, data, s.seed)

    def loss(batch: dict[str, torch.Tensor], _: object) -> torch.Tensor:
        logits = task.forward(model, batch)
        teacher = task.kd_view(rows_at(teacher_logits, batch[INDEX]).to(logits.device), batch)
        return hinton_kd(task.kd_view(logits, batch), teacher, task.kd_labels(batch).to(logits.device), s.temperature, s.alpha)

    fit(model, data, FitPlan(s.epochs, s.lr, s.batch_size, s.seed, "qad"), loss)
    return strip_qad(model)


def export_qad_qdq(model: nn.Module, input_shape: tuple[int, ...], path: Path, recipe: TargetQuantize,
                   calib_x: np.ndarray, *, opset: int = 18, calibrate_method: str = "minmax") -> list[str]:
    """Export the QAD student with the pipeline's exporter and quantize it with the pipeline's
    `quantize_int8` for `recipe`, calibrated on `calib_x` (all rows: pass the quantize stage's
    `calibration_samples`). Writes `path`; returns `qdq_violations` of the result (empty: ok).

    For QNN HTP (`static_batch` recipes) quantize the float export with
    `edgekd.backends.qnn.htp.quantize_for_htp` instead; this function refuses them."""
    import onnx

    from edgekd.config.models import QuantizeConfig
    from edgekd.graph.export import INPUT_NAME, export_onnx
    from edgekd.graph.quant_rules import qdq_violations
    from edgekd.graph.quantize import quantize_int8

    if recipe.static_batch is not None:
        raise ValueError("static-batch (QNN HTP) recipes are quantized by edgekd.backends.qnn.htp.quantize_for_htp")
    if any(isinstance(m, (_FakeQuantLayer, _QadModel)) for m in model.modules()):
        raise ValueError("the model still has fake-quant wrappers: pass the student qad_finetune returns")
    model.eval()
    cfg = QuantizeConfig(calibrate_method=calibrate_method, calibration_samples=len(calib_x))
    with temp_dir("qad") as tmp:
        fp32 = Path(tmp) / "student_qad.onnx"
        export_onnx(model, input_shape, fp32, opset)
        quantize_int8(fp32, Path(path), {INPUT_NAME: np.ascontiguousarray(calib_x, dtype=np.float32)}, cfg, recipe)
    return qdq_violations(onnx.load(str(path)), recipe)


@dataclass(frozen=True)
class QadComparison:
    """Top-1 accuracy (points) of the PTQ and the QAD INT8 graphs on the same test samples."""

    ptq_accuracy_pt: float
    qad_accuracy_pt: float
    samples: int
    runtime: str

    @property
    def recovered_pt(self) -> float:
        return self.qad_accuracy_pt - self.ptq_accuracy_pt

    def describe(self) -> str:
        return (f"INT8 top-1 on {self.samples} test samples ({self.runtime}): PTQ {self.ptq_accuracy_pt:.2f} %, "
                f"QAD {self.qad_accuracy_pt:.2f} % ({self.recovered_pt:+.2f} pt)")


def onnx_accuracy_pt(model_path: Path, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy in points of an ONNX model on named input arrays, run with ONNX Runtime CPU."""
    from edgekd.backends.ort import session as ortb
    from edgekd.pipeline.evaluation import top1_pt

    return top1_pt(ortb.predict_file(model_path, dict(feeds)), labels)


def compare_ptq_qad(ptq_model: Path, qad_model: Path, feeds: Mapping[str, np.ndarray], labels: np.ndarray) -> QadComparison:
    """PTQ (quantize stage's INT8 graph of the distilled student) vs QAD INT8 graph, both measured."""
    from edgekd.backends.ort import session as ortb

    return QadComparison(onnx_accuracy_pt(ptq_model, feeds, labels), onnx_accuracy_pt(qad_model, feeds, labels), len(labels),
                         ortb.runtime_description())
