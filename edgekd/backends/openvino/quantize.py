"""NNCF post-training INT8 quantization of an OpenVINO model, calibrated on the same rows the ONNX
Runtime path uses (edgekd.graph.quantize.calibration_rows of the context's calibration feeds)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.backends.openvino.runtime import read
from edgekd.common.toolchain import require


@dataclass(frozen=True)
class NncfRecipe:
    """transformer: NNCF's ModelType.TRANSFORMER (keeps the ops NNCF knows to be sensitive in float and
    uses its mixed preset: symmetric weights, asymmetric activations); else its performance preset
    (symmetric weights and activations)."""

    transformer: bool = False
    rows_per_feed: int = 1

    def describe(self, samples: int) -> str:
        preset = "MIXED, model_type TRANSFORMER" if self.transformer else "PERFORMANCE"
        return f"nncf.quantize (NNCF post-training INT8, preset {preset}, subset_size {samples} calibration rows)"


def calibration_feeds(rows: dict[str, np.ndarray], per_feed: int = 1) -> list[dict[str, np.ndarray]]:
    """`rows` (named inputs, samples on axis 0) cut into feeds of `per_feed` rows each."""
    count = len(next(iter(rows.values())))
    return [{name: array[i:i + per_feed] for name, array in rows.items()} for i in range(0, count, per_feed)]


def quantize_nncf(source: Path, rows: dict[str, np.ndarray], xml: Path, recipe: NncfRecipe) -> tuple[list[Path], str]:
    """INT8 IR of `source` (ONNX) at `xml` (+ .bin) by nncf.quantize over `rows`. Returns the IR files
    and how it was made."""
    nncf = require("nncf", "OpenVINO INT8 (NNCF) candidates")
    ov = require("openvino", "OpenVINO engines")
    feeds = calibration_feeds(rows, recipe.rows_per_feed)
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if recipe.transformer else {"preset": nncf.QuantizationPreset.PERFORMANCE}
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # its progress bars and INFO lines are not the report's
    try:
        quantized = nncf.quantize(read(source), nncf.Dataset(feeds), subset_size=len(feeds), **kwargs)
    finally:
        nncf_logger.setLevel(level)
    ov.save_model(quantized, str(xml))
    return [xml, xml.with_suffix(".bin")], (f"{recipe.describe(len(feeds))} of {source.name}, saved as an OpenVINO IR (weights "
                                            "NNCF left in float stored as fp16, ov.save_model's default; what is timed and judged)")
