"""torch -> ONNX with a dynamic batch axis, and the parity check of ONNX Runtime against torch."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.toolchain import require
from edgekd.errors import EdgekdError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 4096  # the largest batch a dynamic batch axis admits


class ExportFailed(EdgekdError):
    """torch.onnx could not export the student (usually an unsupported op in the model)."""


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Exporters print progress, notices and warnings; keep them, to quote the last line on failure."""
    log = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "optimum", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            yield log
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def failed(what: str, exc: Exception, log: io.StringIO) -> ExportFailed:
    """The error for an exporter that raised `exc`, quoting the last line it printed."""
    last = (log.getvalue().strip().splitlines() or [str(exc)])[-1]
    return ExportFailed(f"{what} failed: {type(exc).__name__}: {exc} | {last}", "check the model for ops the exporter cannot trace")


def export_torch(model: Any, args: tuple[Any, ...], path: Path, opset: int, names: tuple[list[str], list[str]],
                 dynamic_shapes: tuple[dict[int, Any], ...], what: str) -> None:
    """torch.onnx.export with the torch.export-based exporter (dynamo), weights inside the file;
    `names`: (input names, output names); ExportFailed naming `what` if it cannot."""
    torch = require("torch", "ONNX export")
    require("onnxscript", "ONNX export")
    with quiet() as log:
        try:
            torch.onnx.export(model, args, str(path), dynamo=True, opset_version=opset, input_names=names[0],
                              output_names=names[1], dynamic_shapes=dynamic_shapes, external_data=False)
        except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
            raise failed(f"torch.onnx.export of {what}", exc, log) from exc


def export_onnx(model: Any, input_shape: tuple[int, ...], path: Path, opset: int) -> None:
    """A model of one float input [batch, *input_shape] -> `logits`; batch is the one dynamic axis."""
    torch = require("torch", "ONNX export")
    from torch.export import Dim

    export_torch(model, (torch.zeros((2, *input_shape)),), path, opset, ([INPUT_NAME], [OUTPUT_NAME]),
                 ({0: Dim("batch", min=1, max=MAX_BATCH)},), f"the {type(model).__name__} student")


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
    """The worst difference per sample row ([N, C]; token logits [N, T, V] are compared per sample)."""
    rows = len(torch_logits)
    diff = np.abs(torch_logits.reshape(rows, -1).astype(np.float64) - onnx_logits.reshape(rows, -1).astype(np.float64))
    torch_logits, onnx_logits = torch_logits.reshape(rows, -1), onnx_logits.reshape(rows, -1)
    sample, out = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return Parity(float(diff[sample, out]), int(sample), int(out),
                  float(torch_logits[sample, out]), float(onnx_logits[sample, out]), len(diff))
