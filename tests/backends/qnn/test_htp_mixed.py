"""edgekd/backends/qnn/quantize.py: uint16 LayerNorm/Softmax activations in a uint8 HTP graph (mixed
precision) on the real optimum-exported tiny BERT, run on the QNN HTP backend (emulated on x86)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.config.qnn import QnnConfig

pytestmark = pytest.mark.qnn
WIDE = ("LayerNormalization", "Softmax")


@pytest.fixture(scope="module")
def bert_htp(zoo, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny BERT quantized for the HTP twice: uint8 everywhere, and with WIDE at uint16."""
    pytest.importorskip("onnxruntime_qnn")
    from edgekd.backends.qnn.quantize import quantize_for_htp
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs

    root, source = tmp_path_factory.mktemp("htp-mixed"), zoo("bert")
    inputs = load_inputs(source)
    calib, feeds = make_feeds(inputs, rows=24, seed=1), make_feeds(inputs, rows=8, seed=2)
    out = {"fp32": source, "feeds": feeds}
    for name, ops in (("u8", ()), ("mixed", WIDE)):
        out[name] = root / f"{name}.onnx"
        quantize_for_htp(source, out[name], calib, QnnConfig(uint16_activation_ops=ops), "minmax", inputs)
    return out


def _zero_point_types(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> the zero-point type of the QuantizeLinear that quantizes it."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: inits[n.input[2]].dtype.name for n in model.graph.node if n.op_type == "QuantizeLinear"}


def test_layernorm_and_softmax_read_and_write_uint16(bert_htp) -> None:
    from edgekd.backends.qnn.rules import check_htp_rules

    mixed, plain = onnx.load(str(bert_htp["mixed"])), onnx.load(str(bert_htp["u8"]))
    assert set(_zero_point_types(plain).values()) == {"uint8"}
    types, producers = _zero_point_types(mixed), {o: n for n in mixed.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in mixed.graph.initializer}
    wide = [n for n in mixed.graph.node if n.op_type in WIDE]
    assert len(wide) == sum(n.op_type in WIDE for n in plain.graph.node) > 0
    for node in wide:
        dq = producers[node.input[0]]
        assert inits[dq.input[2]].dtype == np.uint16, node.name  # reads uint16
        assert types[node.output[0]] == "uint16", node.name  # writes uint16
    assert Counter(types.values())["uint8"] > Counter(types.values())["uint16"]  # uint8 elsewhere
    assert check_htp_rules(mixed) == [] and check_htp_rules(plain) == []  # no u16 x u16 MatMul among them


def test_mixed_graph_runs_on_the_htp_close_to_fp32(bert_htp) -> None:
    from edgekd.backends.ort.session import predict, predict_file
    from edgekd.backends.qnn.htp import open_session, placement

    cfg = QnnConfig(uint16_activation_ops=WIDE)
    nodes = placement(bert_htp["mixed"], cfg)
    off = [n for n in nodes if n.runs_on != "accelerator"]
    # only the graph-output DequantizeLinear stays on the CPU (the QNN EP's offload_graph_io_quantization)
    assert [n.op_type for n in off] == ["DequantizeLinear"] and len(nodes) > 250
    reference = predict_file(bert_htp["fp32"], bert_htp["feeds"])
    htp = predict(open_session(bert_htp["mixed"], cfg, disable_cpu_fallback=False), bert_htp["feeds"])
    assert htp.shape == reference.shape
    assert np.abs(htp - reference).max() <= 0.05 * np.abs(reference).max()


def _tensor(path: Path, feeds: dict, pick) -> np.ndarray:
    """The values of the tensor `pick(model)` names, run on the CPU EP (a graph output added)."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    name = pick(model)
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rows = len(next(iter(feeds.values())))
    return np.concatenate([session.run([name], {k: v[i:i + 1] for k, v in feeds.items()})[0] for i in range(rows)])


def _last(op_type: str, dequantized: bool):
    """The output of the graph's last `op_type` node (after its Q/DQ pair in a QDQ graph)."""
    def pick(model: onnx.ModelProto) -> str:
        out = [n for n in model.graph.node if n.op_type == op_type][-1].output[0]
        if not dequantized:
            return out
        consumers = {i: n for n in model.graph.node for i in n.input}
        return consumers[consumers[out].output[0]].output[0]
    return pick


@pytest.mark.parametrize("op_type", WIDE)
def test_uint16_makes_layernorm_and_softmax_outputs_closer_to_fp32(bert_htp, op_type) -> None:
    """The error of the last LayerNorm's and Softmax's outputs against fp32, uint8 vs mixed (CPU EP
    on the same QDQ graphs the HTP runs)."""
    feeds = bert_htp["feeds"]
    reference = _tensor(bert_htp["fp32"], feeds, _last(op_type, False))
    errors = {name: np.abs(_tensor(bert_htp[name], feeds, _last(op_type, True)) - reference).mean() for name in ("u8", "mixed")}
    assert errors["mixed"] < errors["u8"] / 2, errors


@pytest.mark.parametrize("name", ["u8", "mixed"])
def test_padding_stays_masked_though_calibrated_on_masks_of_ones(bert_htp, name) -> None:
    """Calibrated on generated feeds (masks of ones), the HTP graph still gives padded positions no
    attention (the mask and the masked scores on [-MASK_FLOOR, max]) and its probabilities do not
    clip (the Softmax outputs on [0, 1])."""
    from helpers import padded_masks, softmax_outputs

    feeds = padded_masks(bert_htp["feeds"])
    probs = softmax_outputs(bert_htp[name], feeds)
    padding = feeds["attention_mask"] == 0
    assert padding.any() and probs[:, padding.nonzero()[0], :, :, padding.nonzero()[1]].max() < 1e-3
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=0.05 if name == "u8" else 0.005)
