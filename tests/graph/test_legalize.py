"""edgekd/graph/legalize.py: exact rewrites of real exports (the numbers do not change)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgekd.graph.feeds import make_feeds
from edgekd.graph.legalize import legalize
from edgekd.graph.resolve import load_inputs


@pytest.mark.parametrize("exporter", ["optimum", "torch"])
def test_efficientnets_whole_window_pooling_becomes_global(zoo, tmp_path: Path, exporter: str) -> None:
    path = zoo("efficientnet", exporter)
    inputs = load_inputs(path)
    notes = legalize(path, tmp_path / "legal.onnx", inputs)
    assert len(notes) == 1 and "AveragePool with a [320, 320] window over a [2, 2] input is GlobalAveragePool" in notes[0]
    ops = [n.op_type for n in onnx.load(str(tmp_path / "legal.onnx")).graph.node]
    assert "AveragePool" not in ops and "GlobalAveragePool" in ops
    feeds = make_feeds(inputs, rows=3)
    before = ort.InferenceSession(str(path)).run(None, feeds)[0]
    after = ort.InferenceSession(str(tmp_path / "legal.onnx")).run(None, feeds)[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_ordinary_pooling_is_left_alone(zoo, tmp_path: Path) -> None:
    path = zoo("resnet", "optimum")  # a 3x3 stride-2 MaxPool and a GlobalAveragePool
    assert legalize(path, tmp_path / "same.onnx", load_inputs(path)) == []
    assert [n.op_type for n in onnx.load(str(tmp_path / "same.onnx")).graph.node] == \
        [n.op_type for n in onnx.load(str(path)).graph.node]
