"""Static INT8 post-training quantization (QDQ) through onnxruntime.quantization."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from edgekd.config.models import QuantizeConfig
from edgekd.config.target import TargetQuantize
from edgekd.toolchain import require

# One sample per calibration batch: ONNX Runtime's histogram calibrators (entropy, percentile)
# stack the collected batches and fail on a short last batch (seen with onnxruntime 1.32).
CALIBRATION_BATCH = 1


def calibration_samples(calib_x: np.ndarray, cfg: QuantizeConfig) -> np.ndarray:
    """A seeded draw of `cfg.calibration_samples` rows of the calibration split (all if fewer)."""
    rng = np.random.default_rng(cfg.seed)
    count = min(cfg.calibration_samples, len(calib_x))
    return calib_x[np.sort(rng.choice(len(calib_x), size=count, replace=False))]


def quantize_int8(fp32_model: Path, out_model: Path, samples: np.ndarray, input_name: str,
                  cfg: QuantizeConfig, target: TargetQuantize, quant_format: str = "qdq") -> None:
    """quant_pre_process (shape inference + optimization), then quantize_static to QDQ (or, for
    engine tuning, QOperator: QLinearConv etc.) with the target's types, symmetry, per-channel
    weights and the chosen calibration method."""
    require("onnxruntime", "INT8 quantization")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(samples[i:i + CALIBRATION_BATCH] for i in range(0, len(samples), CALIBRATION_BATCH))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    prepared = out_model.with_name(out_model.stem + ".pre.onnx")
    # the calibrators print progress with print(); keep the build's output readable
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(fp32_model), str(prepared))
        quantize_static(
            str(prepared), str(out_model), Reader(),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator, per_channel=target.per_channel, reduce_range=target.reduce_range,
            activation_type=types[target.activation_type], weight_type=types[target.weight_type],
            calibrate_method=methods[cfg.calibrate_method],
            extra_options={"ActivationSymmetric": target.symmetric_activations, "WeightSymmetric": target.symmetric_weights,
                           "QuantizeBias": target.quantize_bias},
        )
    prepared.unlink(missing_ok=True)
