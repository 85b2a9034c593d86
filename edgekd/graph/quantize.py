"""Static INT8 post-training quantization (QDQ) through onnxruntime.quantization, calibrated on
named inputs (any number of them, any dtype: rows along axis 0 of each array)."""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from edgekd.common.fsutil import scratch_cwd
from edgekd.common.toolchain import require
from edgekd.config.models import QuantizeConfig
from edgekd.config.target import TargetQuantize

# One sample per calibration batch: ONNX Runtime's histogram calibrators (entropy, percentile)
# stack the collected batches and fail on a short last batch (seen with onnxruntime 1.32).
CALIBRATION_BATCH = 1
Calibration = Mapping[str, np.ndarray]  # input name -> samples along axis 0


def calibration_rows(calib: Calibration, cfg: QuantizeConfig) -> dict[str, np.ndarray]:
    """A seeded draw of `cfg.calibration_samples` rows (the same rows of every input; all if fewer)."""
    count = len(next(iter(calib.values())))
    rng = np.random.default_rng(cfg.seed)
    rows = np.sort(rng.choice(count, size=min(cfg.calibration_samples, count), replace=False))
    return {name: array[rows] for name, array in calib.items()}


def calibration_reader(calib: Calibration, float_inputs_as: str | None = None) -> Any:
    """An onnxruntime CalibrationDataReader over `calib`, CALIBRATION_BATCH rows per feed
    (`float_inputs_as`: cast float arrays to this dtype, e.g. "float32")."""
    require("onnxruntime", "INT8 quantization")
    from onnxruntime.quantization import CalibrationDataReader

    count = len(next(iter(calib.values()))) if calib else 0

    class FeedReader(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, count, CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            feed = {}
            for name, array in calib.items():
                rows = array[start:start + CALIBRATION_BATCH]
                if float_inputs_as and np.issubdtype(rows.dtype, np.floating):
                    rows = rows.astype(float_inputs_as)
                feed[name] = np.ascontiguousarray(rows)
            return feed

        def rewind(self) -> None:
            self._starts = iter(range(0, count, CALIBRATION_BATCH))

    return FeedReader()


CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
# what onnxruntime.quantization logs on the root logger that says nothing to act on: per-channel
# quantization falls back to per-tensor for rank-1 weights (LayerNorm scales), and the advice to
# pre-process a model that has been (qnn_preprocess_model / quant_pre_process did it), that an
# absent optional input (name "", e.g. a fused Attention's past) has no type, and that 16-bit Q/DQ
# raised the opset to 21 (the HTP rules check and the HTP run verify the result)
_NOISE = ("is out-of-range for weight", "pre-processing before quantization", "failed to infer the type of tensor: . Skip",
          "which does not support 16-bit integer quantization natively")


@contextlib.contextmanager
def quiet_quantizer_logs() -> Iterator[None]:
    """Drop onnxruntime.quantization's _NOISE messages from the root logger for the block."""
    def keep(record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _NOISE)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def calibrate_method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def _pre_process(fp32_model: Path, prepared: Path) -> None:
    """quant_pre_process; its symbolic shape inference gives up on some real exports (optimum's
    BERT: "Incomplete symbolic shape inference"): then again with auto_merge, then without it
    (ONNX's shape inference and the graph optimization still run)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for options in ({}, {"auto_merge": True}, {"skip_symbolic_shape": True}):
        try:
            with scratch_cwd():  # where the symbolic inference saves its debug model when it gives up
                quant_pre_process(str(Path(fp32_model).resolve()), str(Path(prepared).resolve()), **options)
            return
        except Exception as exc:  # noqa: BLE001 - it raises a bare Exception
            if "symbolic shape" not in str(exc).lower() or options.get("skip_symbolic_shape"):
                raise


def _mask_path_nodes(prepared: Path, mask_inputs: tuple[str, ...]) -> list[str]:
    """The nodes of `prepared`'s attention-mask path (edgekd.graph.transformer.mask_path) and the
    MatMuls reading its Softmax outputs, named in the file, for nodes_to_exclude: probabilities in
    int8 steps of 1/127 (or clipped to a calibrated range) would misweigh attention."""
    import onnx

    from edgekd.graph.transformer import mask_path, name_nodes

    model = onnx.load(str(prepared))
    name_nodes(model)
    path = mask_path(model, list(mask_inputs))
    readers = [n.name for n in model.graph.node if n.op_type == "MatMul" and set(n.input) & set(path.probabilities)]
    if path.nodes:
        onnx.save(model, str(prepared))
    return [*path.nodes, *readers]


def static_options(cfg: QuantizeConfig, target: TargetQuantize) -> dict[str, Any]:
    """quantize_static's keyword arguments for the target's recipe and the calibration method: types,
    per-channel weights, reduce_range, symmetry, bias (the quant format and the nodes are the caller's)."""
    from onnxruntime.quantization import QuantType

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}
    return {"per_channel": target.per_channel, "reduce_range": target.reduce_range,
            "activation_type": types[target.activation_type], "weight_type": types[target.weight_type],
            "calibrate_method": calibrate_method(cfg.calibrate_method),
            "extra_options": {"ActivationSymmetric": target.symmetric_activations, "WeightSymmetric": target.symmetric_weights,
                              "QuantizeBias": target.quantize_bias}}


def prepare(fp32_model: Path, prepared: Path, mask_inputs: tuple[str, ...] = ()) -> list[str]:
    """quant_pre_process `fp32_model` into `prepared`; returns the nodes of its attention-mask path
    from the inputs `mask_inputs` (and the MatMuls reading its probabilities), to keep in float."""
    _pre_process(fp32_model, prepared)
    return _mask_path_nodes(prepared, mask_inputs) if mask_inputs else []


def quantize_int8(fp32_model: Path, out_model: Path, calib: Calibration, cfg: QuantizeConfig, target: TargetQuantize,
                  quant_format: str = "qdq", mask_inputs: tuple[str, ...] = ()) -> list[str]:
    """quant_pre_process (shape inference + optimization), then quantize_static to QDQ (or, for
    engine tuning, QOperator: QLinearConv etc.) with the target's types, symmetry, per-channel
    weights and the chosen calibration method, calibrated on every row of `calib`. The
    attention-mask path from the inputs `mask_inputs` and the MatMuls reading its probabilities stay
    in float (edgekd.graph.transformer says why); returns the names of those nodes."""
    require("onnxruntime", "INT8 quantization")
    from onnxruntime.quantization import QuantFormat, quantize_static

    prepared = out_model.with_name(out_model.stem + ".pre.onnx")
    # the calibrators print progress with print(); keep the build's output readable
    with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():
        excluded = prepare(fp32_model, prepared, mask_inputs)
        quantize_static(
            str(prepared), str(out_model), calibration_reader(calib),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            nodes_to_exclude=excluded or None, **static_options(cfg, target),
        )
    prepared.unlink(missing_ok=True)
    return excluded


def dynamic_op_types() -> tuple[str, ...]:
    """The op types the tuner's dynamic INT8 variants quantize: ONNX Runtime's integer-op registry
    less Conv. ConvInteger (im2col + MatMulInteger) ran ViT-Tiny's patch embedding at 1.22 ms against
    0.66 ms for the fp32 Conv (peers_real per-op profiles, AVX2 host); the whole engine with that conv
    in fp32 was 16.9 vs 18.0 ms p50 (benchmarks/results/peers_real_findings.md)."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return tuple(op for op in IntegerOpsRegistry if op != "Conv")


def quantize_dynamic_int8(fp32_model: Path, out_model: Path, target: TargetQuantize, op_types: tuple[str, ...] | None = None) -> None:
    """quantize_dynamic: int8 weights (per-channel and reduce_range as the target's recipe says),
    activations quantized at run time (DynamicQuantizeLinear + MatMulInteger; QAttention and
    QEmbedLayerNormalization on a fused transformer graph). No calibration. `op_types`: only these
    (e.g. MatMul and Gemm, so a decoder's embedding Gather stays float)."""
    onnx = require("onnx", "INT8 quantization")
    require("onnxruntime", "INT8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # shape inference cannot type the outputs of ONNX Runtime's contrib ops (Attention, ...): say they are float
    with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():
        quantize_dynamic(str(fp32_model), str(out_model), weight_type=QuantType.QInt8, per_channel=target.per_channel,
                         reduce_range=target.reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                         op_types_to_quantize=list(op_types) if op_types else None)
