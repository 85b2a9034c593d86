"""edgekd.graph.mixed_precision: one preparation and one calibration, then Q/DQ graphs with some ops
quantized or kept in float, on a trained CNN with one INT8-fragile conv (tests/mixed_model.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from mixed_model import digits_data, fragile_cnn

from edgekd.config.models import QuantizeConfig
from edgekd.config.target import TargetQuantize
from edgekd.graph.mixed_precision import (
    PartialQuantizer,
    PartialSettings,
    QuantOp,
    grouped,
)

X86 = TargetQuantize(activation_type="int8", weight_type="int8", per_channel=True, reduce_range=True)  # targets/x86-avx2.toml


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fragile_cnn(tmp_path_factory.mktemp("fragile") / "model.onnx", epochs=4)


def _accuracy(model: Path) -> float:
    import onnxruntime as ort

    _, _, x, y = digits_data()
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    return float((logits.argmax(1) == y).mean() * 100)


def test_one_calibration_serves_every_partial_graph(fragile, tmp_path, monkeypatch) -> None:
    import sys

    import onnxruntime.quantization  # noqa: F401

    ortq = sys.modules["onnxruntime.quantization.quantize"]  # the module (its package re-exports a function of that name)
    calls = []
    real = ortq.create_calibrator
    monkeypatch.setattr(ortq, "create_calibrator", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, _, _, _ = digits_data()
    pq = PartialQuantizer(fragile, tmp_path, PartialSettings({"input": x[:32]}, QuantizeConfig(), X86))
    ops = pq.quantizable()
    assert [o.name for o in ops if o.op_type in ("Conv", "Gemm")] == ["/0/Conv", "/2/Conv", "/6/Gemm"]
    fp32 = _accuracy(fragile)
    assert fp32 > 80
    # full INT8: the outlier weights take the second conv's per-channel scales, its real weights round to 0
    assert _accuracy(pq.full_model) < fp32 - 30
    only_conv2 = pq.quantize(tmp_path / "only.onnx", only=["/2/Conv"])
    assert _accuracy(only_conv2) < fp32 - 30
    assert abs(_accuracy(pq.quantize(tmp_path / "only0.onnx", only=["/0/Conv"])) - fp32) < 2
    kept = pq.quantize(tmp_path / "kept.onnx", keep_float=["/2/Conv"])
    assert abs(_accuracy(kept) - fp32) < 2
    graph = onnx.load(str(kept)).graph
    float_conv = next(n for n in graph.node if n.name == "/2/Conv")
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(float_conv.input[1]) != "DequantizeLinear"  # its weight stays a float initializer
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) > 0  # the rest is quantized
    assert len(calls) == 1 and pq.cache.is_file()  # ranges computed once, read back from the cache after


def test_large_graphs_are_grouped_in_order() -> None:
    ops = [QuantOp(f"n{i}", "Conv", (f"n{i}",)) for i in range(7)]
    assert grouped(ops, 10) == ops
    groups = grouped(ops, 3)
    assert [len(g.nodes) for g in groups] == [3, 2, 2]
    assert [n for g in groups for n in g.nodes] == [f"n{i}" for i in range(7)]
    assert groups[0].name == "n0 .. n2 (3 ops)" and groups[0].op_type == "group"
    assert np.all([g.op_type == "group" for g in groups])


def test_a_transformers_mask_path_stays_float(zoo, tmp_path) -> None:
    """A BERT (optimum export, tiny config): the attention-mask path the quantize stage keeps in float
    (edgekd.graph.quantize) is never a candidate and is excluded from every partial graph; an op kept
    in float keeps its float weights."""
    from edgekd.graph.quantize import quantize_int8

    model = zoo("bert", "optimum")
    rng = np.random.default_rng(0)
    mask = np.ones((8, 16), dtype=np.int64)
    mask[:, 12:] = 0
    feeds = {"input_ids": rng.integers(0, 100, (8, 16)).astype(np.int64), "attention_mask": mask,
             "token_type_ids": np.zeros((8, 16), dtype=np.int64)}
    pq = PartialQuantizer(model, tmp_path, PartialSettings(feeds, QuantizeConfig(), X86, ("attention_mask",)))
    stage = quantize_int8(model, tmp_path / "stage.onnx", feeds, QuantizeConfig(), X86, mask_inputs=("attention_mask",))
    assert set(pq.always_float) == set(stage) and stage
    ops = pq.quantizable()
    assert not {o.name for o in ops} & set(pq.always_float)
    graph = onnx.load(str(pq.prepared)).graph
    weights = {t.name for t in graph.initializer}
    matmul = next(o for o in ops if o.op_type == "MatMul" and next(n for n in graph.node if n.name == o.name).input[1] in weights)
    kept = onnx.load(str(pq.quantize(tmp_path / "kept.onnx", keep_float=matmul.nodes))).graph
    node = next(n for n in kept.node if n.name == matmul.name)
    assert node.input[1] in {t.name for t in kept.initializer}  # its weight: the float initializer, no DequantizeLinear
    assert sum(n.op_type == "MatMul" and any(i.endswith("DequantizeLinear_Output") for i in n.input) for n in kept.node) > 0
