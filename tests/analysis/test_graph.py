"""edgekd.analysis.graph: MACs against torch's FlopCounterMode on models exported the way the
pipeline exports them (torch.onnx dynamo, opset 18, dynamic batch), and QDQ costs at int8."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.analysis.graph import graph_costs, node_costs, op_class
from edgekd.config.device import OP_CLASSES

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _cnn() -> "torch.nn.Module":
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 12, 1, groups=2),  # grouped pointwise
        nn.ConvTranspose2d(12, 4, 2, stride=2),
        nn.Flatten(), nn.Linear(4 * 16 * 16, 10),
    ).eval()


class _TokenMlp(torch.nn.Module):
    """Linear on a (batch, tokens, features) input: exported as MatMul (+ Add), not Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x: "torch.Tensor") -> "torch.Tensor":
        return self.fc2(torch.relu(self.fc1(x)))


def _export(model: "torch.nn.Module", shape: tuple[int, ...], path: Path) -> Path:
    from edgekd.graph.export import export_onnx

    export_onnx(model, shape, path, opset=18)
    return path


def _torch_macs(model: "torch.nn.Module", x: "torch.Tensor") -> dict[str, int]:
    """aten op -> MACs (FLOPs / 2) as torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return {str(op): flops // 2 for op, flops in counter.get_flop_counts()["Global"].items()}


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return _export(_cnn(), (3, 16, 16), tmp_path_factory.mktemp("graph") / "cnn.onnx")


@pytest.fixture(scope="module")
def qdq_onnx(cnn_onnx: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self._it = iter([{"input": rng.standard_normal((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])

        def get_next(self) -> dict | None:
            return next(self._it, None)

    out = cnn_onnx.with_name("cnn_int8.onnx")
    quantize_static(str(cnn_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out


@pytest.mark.parametrize("batch", [1, 3])
def test_conv_and_gemm_macs_match_torch_flop_counter(cnn_onnx: Path, batch: int) -> None:
    torch.manual_seed(0)
    expected = _torch_macs(_cnn(), torch.zeros(batch, 3, 16, 16))
    costs = node_costs(cnn_onnx, batch=batch)
    conv = sum(c.macs for c in costs if c.op_class in ("conv", "depthwise"))
    gemm = sum(c.macs for c in costs if c.op_class == "gemm")
    assert conv == expected["aten.convolution"]
    assert gemm == expected["aten.addmm"]
    assert sum(c.macs for c in costs if c.op_class not in ("conv", "depthwise", "gemm")) == 0


def test_depthwise_conv_macs(cnn_onnx: Path) -> None:
    """Depthwise 3x3 over 8 channels at 8x8: one 9-MAC window per output element."""
    depthwise = [c for c in node_costs(cnn_onnx) if c.op_type == "Conv"][1]
    assert depthwise.output_elems == 8 * 8 * 8
    assert depthwise.macs == depthwise.output_elems * 9
    assert depthwise.weight_elems == 8 * 1 * 3 * 3 + 8  # weight + bias
    assert depthwise.op_class == "depthwise" and [c for c in node_costs(cnn_onnx) if c.op_type == "Conv"][0].op_class == "conv"


def test_matmul_macs_match_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _TokenMlp().eval()
    path = _export(model, (4, 16), tmp_path / "mlp.onnx")
    costs = node_costs(path, batch=2)
    assert {c.op_type for c in costs if c.op_class == "gemm"} == {"MatMul"}
    expected = _torch_macs(model, torch.zeros(2, 4, 16))
    assert sum(c.macs for c in costs) == sum(expected.values()) == 2 * 4 * (16 * 32 + 32 * 8)


def test_bytes_at_the_models_own_types(cnn_onnx: Path) -> None:
    costs = node_costs(cnn_onnx, batch=2)
    first = costs[0]
    assert (first.op_type, first.op_class) == ("Conv", "conv")
    assert first.input_elems == 2 * 3 * 16 * 16 and first.input_bytes == 4 * first.input_elems
    assert first.output_elems == 2 * 8 * 8 * 8 and first.output_bytes == 4 * first.output_elems
    assert first.weight_elems == 8 * 3 * 3 * 3 + 8 and first.weight_bytes == 4 * first.weight_elems
    reshape = next(c for c in costs if c.op_class == "data_movement")
    assert reshape.macs == 0 and reshape.input_elems == reshape.output_elems == 2 * 4 * 16 * 16


def test_qdq_model_costs_compute_at_int8(cnn_onnx: Path, qdq_onnx: Path) -> None:
    fp32 = {c.name: c for c in node_costs(cnn_onnx)}
    model = onnx.load(str(cnn_onnx))
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    weight_and_bias = {n.name: (sizes[n.input[1]], sizes[n.input[2]]) for n in model.graph.node if len(n.input) == 3}
    qdq = node_costs(qdq_onnx)
    assert {c.op_type for c in qdq if c.op_class == "quant"} == {"QuantizeLinear", "DequantizeLinear"}
    compute = [c for c in qdq if c.op_class in ("conv", "depthwise", "gemm")]
    assert len(compute) == 5
    for c in compute:
        assert c.macs == fp32[c.name].macs  # same MACs, whatever the types
        assert c.input_bytes == c.input_elems  # read from a DequantizeLinear: stored int8
        assert c.output_bytes == c.output_elems  # written to a QuantizeLinear: int8
        weight, bias = weight_and_bias[c.name]  # int8 weight, int32 bias, counted once, here
        assert (c.weight_elems, c.weight_bytes) == (weight + bias, weight + 4 * bias)
    weight_dq = [c for c in qdq if c.op_type == "DequantizeLinear" and not c.inputs]
    assert weight_dq and all(c.weight_bytes == c.input_bytes == c.output_bytes == 0 for c in weight_dq)
    input_q = next(c for c in qdq if c.op_type == "QuantizeLinear" and c.inputs == ("input",))
    assert input_q.input_bytes == 4 * input_q.input_elems and input_q.output_bytes == input_q.output_elems


def test_batch_and_symbolic_dims_resolve(tmp_path: Path) -> None:
    """Every symbolic dim gets a value (edgekd.graph.resolve); a batch the model fixes is an error."""
    from onnx import TensorProto, helper

    from edgekd.graph.inputs import ShapeError, parse_shapes
    from edgekd.graph.resolve import resolve_inputs

    def relu_model(dims: list) -> "onnx.ModelProto":
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    assert node_costs(relu_model([1, 4]), batch=1)[0].output_elems == 4
    with pytest.raises(ShapeError, match="fixes its batch"):
        node_costs(relu_model([1, 4]), batch=2)
    assert node_costs(relu_model(["n", 4]), batch=5)[0].input_elems == 20
    with pytest.raises(ShapeError, match="input 'x'.*'seq'"):  # a float input's second axis has no default
        node_costs(relu_model(["batch", "seq"]), batch=2)
    model = relu_model(["batch", "seq"])
    inputs = resolve_inputs(model, overrides=parse_shapes(["x=3x7"]))
    costs = graph_costs(model, inputs=inputs)
    assert costs.nodes[0].input_elems == 21 and costs.inputs == inputs and costs.methods
    with pytest.raises(ValueError, match="batch must be"):
        node_costs(relu_model([1, 4]), batch=0)


def test_op_classes() -> None:
    assert op_class("Conv") == "conv" and op_class("MatMul") == "gemm"
    assert op_class("GlobalAveragePool") == "pool" and op_class("Flatten") == "data_movement"
    assert op_class("QuantizeLinear") == "quant" and op_class("SomethingNew") == "other"
    assert all(op_class(op) in OP_CLASSES for op in ("Relu", "Add", "BatchNormalization", "Softmax"))
