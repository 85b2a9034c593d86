"""torch -> ONNX with a dynamic batch axis, and the parity check of ONNX Runtime against torch."""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.common.toolchain import require
from edgekd.errors import EdgekdError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportFailed(EdgekdError):
    """torch.onnx could not export the student (usually an unsupported op in the model)."""


def export_onnx(model: object, input_shape: tuple[int, ...], path: Path, opset: int) -> None:
    """Export with torch.onnx's torch.export-based exporter; batch is the one dynamic axis."""
    torch = require("torch", "ONNX export")
    require("onnxscript", "ONNX export")
    from torch.export import Dim

    log = io.StringIO()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notices
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            torch.onnx.export(
                model, (torch.zeros((2, *input_shape)),), str(path), dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: Dim("batch", min=1, max=4096)},), external_data=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
        last = (log.getvalue().strip().splitlines() or [str(exc)])[-1]
        raise ExportFailed(f"torch.onnx.export failed for the student: {type(exc).__name__}: {exc} | {last}",
                           "check the student for ops torch.export cannot trace") from exc
    finally:
        exporter_log.setLevel(level)


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    sample: int  # index into the evaluated samples where the worst difference is
    output_index: int
    torch_value: float
    onnx_value: float
    samples: int

    def describe(self) -> str:
        return (f"worst |onnx - torch| = {self.max_abs_diff:.3g} at sample {self.sample}, output {self.output_index} "
                f"(torch {self.torch_value:.6g}, onnx {self.onnx_value:.6g}), over {self.samples} samples")


def parity(torch_logits: np.ndarray, onnx_logits: np.ndarray) -> Parity:
    diff = np.abs(torch_logits.astype(np.float64) - onnx_logits.astype(np.float64))
    sample, out = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return Parity(float(diff[sample, out]), int(sample), int(out),
                  float(torch_logits[sample, out]), float(onnx_logits[sample, out]), len(diff))
