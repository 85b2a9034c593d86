"""edgekd/backends/qnn/htp.py and qnn_config.py: HTP quantization, sessions, context binaries and real
placement on the QNN HTP backend (Qualcomm's x86 emulator in onnxruntime-qnn)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config.qnn import QnnConfig

CFG = QnnConfig(htp_arch="75", soc_model="57")


def _runtimes() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")


def _cnn():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10),
    ).eval()


def _with_erf():
    """The CNN with a standalone erf on its logits: ONNX `Erf`, which the QNN EP has no builder for."""
    import torch

    class Erf(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.erf(x)

    return torch.nn.Sequential(*_cnn(), Erf()).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """fp32 exports (dynamic batch) and their HTP QDQ versions, calibrated on random data."""
    _runtimes()
    from edgekd.backends.qnn.htp import quantize_for_htp
    from edgekd.graph.export import INPUT_NAME, export_onnx
    from edgekd.graph.resolve import load_inputs

    root = tmp_path_factory.mktemp("qnn")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    out = {"calib": calib, "x": rng.standard_normal((8, 1, 8, 8)).astype(np.float32), "root": root}
    for name, module in (("cnn", _cnn()), ("erf", _with_erf())):
        fp32, qdq = root / f"{name}.onnx", root / f"{name}_htp.onnx"
        export_onnx(module, (1, 8, 8), fp32, opset=18)
        quantize_for_htp(fp32, qdq, {INPUT_NAME: calib}, CFG, "minmax", load_inputs(fp32))
        out[name] = {"module": module, "fp32": fp32, "qdq": qdq}
    return out


def _qnn() -> None:
    pytest.importorskip("onnxruntime_qnn")


# ---------------------------------------------------------------- config


def test_config_provider_options_are_strings() -> None:
    options = QnnConfig(htp_arch="73", soc_model="43", vtcm_mb=8, htp_graph_finalization_optimization_mode=3,
                        enable_htp_fp16_precision=True).provider_options()
    assert options["htp_arch"] == "73" and options["soc_model"] == "43" and options["vtcm_mb"] == "8"
    assert options["htp_graph_finalization_optimization_mode"] == "3" and options["enable_htp_fp16_precision"] == "1"
    assert all(isinstance(v, str) for v in options.values())
    assert "vtcm_mb" not in CFG.provider_options()
    assert CFG.describe() == "QNN HTP v75 (SM8650, Snapdragon 8 Gen 3)"


@pytest.mark.parametrize("bad", [
    {"htp_arch": "74"},                              # not an arch the EP parses
    {"htp_arch": "73", "soc_model": "57"},           # SM8650 is v75
    {"activation_type": "int8"},
    {"htp_graph_finalization_optimization_mode": 4},
    {"vtcm": 8},                                     # unknown key
])
def test_config_rejects(bad: dict) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        QnnConfig(**bad)


# ---------------------------------------------------------------- shapes and rules


def test_quantized_model_is_static_uint8_and_follows_htp_rules(models: dict) -> None:
    import onnx

    from edgekd.backends.qnn.htp import check_htp_rules

    model = onnx.load(str(models["cnn"]["qdq"]))
    assert check_htp_rules(model) == []
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 1, 8, 8]
    zero_points = {i.data_type for i in model.graph.initializer if i.name.endswith("_zero_point")}
    assert onnx.TensorProto.UINT8 in zero_points and onnx.TensorProto.INT8 not in zero_points


def test_rules_reject_int8_dynamic_and_control_flow(models: dict, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        quantize_static,
    )

    from edgekd.backends.qnn.htp import check_htp_rules, fix_shapes
    from edgekd.graph.resolve import load_inputs

    fixed, int8 = tmp_path / "fixed.onnx", tmp_path / "int8.onnx"
    fix_shapes(models["cnn"]["fp32"], fixed, load_inputs(models["cnn"]["fp32"]))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(models["calib"][:4])

        def get_next(self) -> dict | None:
            row = next(self._rows, None)
            return None if row is None else {"input": row[None]}

    quantize_static(str(fixed), str(int8), Reader(), quant_format=QuantFormat.QDQ)  # S8S8 defaults
    problems = check_htp_rules(onnx.load(str(int8)))
    assert any("activation type int8" in p for p in problems) and any("weight type int8" in p for p in problems)

    dynamic = check_htp_rules(onnx.load(str(models["cnn"]["fp32"])))
    assert any("'input' axis 0 is dynamic ('batch')" in p for p in dynamic)

    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "b", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], name="cond", then_branch=branch, else_branch=branch)], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    assert any("control flow (If)" in p for p in check_htp_rules(helper.make_model(graph)))


def test_fix_shapes_makes_every_shape_static(models: dict, tmp_path: Path) -> None:
    import onnx

    from edgekd.backends.qnn.htp import fix_shapes
    from edgekd.graph.resolve import load_inputs

    fix_shapes(models["cnn"]["fp32"], tmp_path / "b4.onnx", load_inputs(models["cnn"]["fp32"], batch=4))
    model = onnx.load(str(tmp_path / "b4.onnx"))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [4, 1, 8, 8]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [4, 10]


def test_quantize_survives_model_metadata(models: dict, tmp_path: Path) -> None:
    """onnxruntime 1.32's qnn_preprocess_model crashes on metadata_props; quantize_for_htp drops them."""
    import onnx

    from edgekd.backends.qnn.htp import check_htp_rules, quantize_for_htp
    from edgekd.graph.resolve import load_inputs

    model = onnx.load(str(models["cnn"]["fp32"]))
    onnx.helper.set_model_props(model, {"author": "edgekd"})
    onnx.save(model, str(tmp_path / "meta.onnx"))
    quantize_for_htp(tmp_path / "meta.onnx", tmp_path / "meta_htp.onnx", {"input": models["calib"][:4]}, CFG, "minmax",
                     load_inputs(tmp_path / "meta.onnx"))
    assert check_htp_rules(onnx.load(str(tmp_path / "meta_htp.onnx"))) == []


def test_missing_qnn_runtime_is_a_toolchain_error(models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from edgekd.backends.qnn.htp import open_session, placement
    from edgekd.errors import ToolchainMissing

    monkeypatch.setitem(sys.modules, "onnxruntime_qnn", None)  # import fails as if not installed
    with pytest.raises(ToolchainMissing, match="onnxruntime_qnn"):
        open_session(models["cnn"]["qdq"], CFG)
    with pytest.raises(ToolchainMissing, match="onnxruntime_qnn"):  # not a verdict on the model's nodes
        placement(models["cnn"]["qdq"], CFG)


def test_empty_inputs_are_refused_with_a_shape_hint(tmp_path: Path) -> None:
    """A decoder's empty past (a 0 dim) is static but the HTP runs no empty tensors: fix_shapes says so."""
    import onnx
    from onnx import TensorProto, helper

    from edgekd.backends.qnn.htp import fix_shapes
    from edgekd.errors import ConfigError
    from edgekd.graph.resolve import load_inputs

    past = helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, 2, "past_len", 4])
    graph = helper.make_graph([helper.make_node("Identity", ["past"], ["present"])], "g", [past],
                              [helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, 2, "past_len", 4])])
    path = tmp_path / "past.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    inputs = load_inputs(path, {"past": (1, 2, 0, 4)})
    with pytest.raises(ConfigError, match="input\\(s\\) past are empty") as refused:
        fix_shapes(path, tmp_path / "fixed.onnx", inputs)
    assert "the HTP runs no empty tensors" in str(refused.value) and "--shape" in refused.value.hint


# ---------------------------------------------------------------- sessions on the HTP


@pytest.mark.qnn
def test_htp_session_and_context_binary(models: dict) -> None:
    _qnn()
    import onnx
    import onnxruntime as ort
    import torch

    from edgekd.backends.ort.session import (
        predict,  # one sample at a time: the HTP graph's static batch
    )
    from edgekd.backends.qnn.htp import EP_NAME, context_files, open_session

    cnn, x = models["cnn"], models["x"]
    ctx = models["root"] / "cnn_ctx.onnx"
    session = open_session(cnn["qdq"], CFG, context_out=ctx)
    assert session.get_providers()[0] == EP_NAME
    htp = predict(session, x)
    with torch.no_grad():
        reference = cnn["module"](torch.from_numpy(x)).numpy()
    cpu_qdq = np.concatenate([ort.InferenceSession(str(cnn["qdq"]), providers=["CPUExecutionProvider"])
                              .run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    model = onnx.load(str(cnn["qdq"]))
    out_scale = next(float(onnx.numpy_helper.to_array(i)) for i in model.graph.initializer if i.name == "logits_scale")
    # HTP fixed-point vs ORT's CPU QDQ kernels: a few output quantization steps; vs fp32 torch: the quantization error
    assert np.abs(htp - cpu_qdq).max() <= 4 * out_scale
    assert np.abs(htp - reference).max() <= 0.1 * np.abs(reference).max()
    assert (htp.argmax(1) == reference.argmax(1)).mean() >= 0.75

    files = context_files(ctx)
    assert [f.name for f in files] == ["cnn_ctx.onnx", "cnn_ctx_qnn.bin"] and all(f.stat().st_size > 0 for f in files)
    # the EP's default leaves the graph-input Q and graph-output DQ to the CPU: they stay in the context model
    assert sorted(n.op_type for n in onnx.load(str(ctx)).graph.node) == ["DequantizeLinear", "EPContext", "QuantizeLinear"]
    reloaded = open_session(ctx, CFG)
    np.testing.assert_allclose(predict(reloaded, x), htp, atol=1e-6)


@pytest.mark.qnn
def test_placement_of_a_fully_supported_cnn(models: dict) -> None:
    _qnn()
    from edgekd.analysis.support_types import SupportReport
    from edgekd.backends.qnn.htp import placement

    nodes = placement(models["cnn"]["qdq"], CFG.model_copy(update={"offload_graph_io_quantization": False}))
    assert len(nodes) >= 10 and {n.runs_on for n in nodes} == {"accelerator"}
    assert {"Conv", "MaxPool", "Gemm"} <= {n.op_type for n in nodes}

    # the EP's default: the graph-input Q and graph-output DQ are left to the CPU, and say why
    default = placement(models["cnn"]["qdq"], CFG)
    off = [n for n in default if n.runs_on != "accelerator"]
    report = SupportReport("qnn-test", CFG.describe(), "ONNX Runtime CPU", default)
    assert report.node_share_off() == pytest.approx(2 / len(default)) and report.to_json()["counts"]["fallback"] == 2
    assert [(n.op_type, n.runs_on) for n in off] == [("QuantizeLinear", "fallback"), ("DequantizeLinear", "fallback")]
    assert "graph input" in off[0].reason and "graph output" in off[1].reason


@pytest.mark.qnn
def test_placement_shows_the_op_the_htp_cannot_run(models: dict) -> None:
    _qnn()
    from edgekd.backends.qnn.htp import HtpUnsupported, open_session, placement

    strict = CFG.model_copy(update={"allow_cpu_fallback": False})
    nodes = placement(models["erf"]["qdq"], strict)
    erf = [n for n in nodes if n.op_type == "Erf"]
    assert len(erf) == 1 and erf[0].runs_on == "unsupported"
    assert "`Erf` are not supported by QNN EP" in erf[0].reason
    assert all(n.runs_on == "accelerator" for n in nodes if n.op_type in ("Conv", "Gemm", "MaxPool"))
    with pytest.raises(HtpUnsupported, match="CPU fallback is disabled"):
        open_session(models["erf"]["qdq"], strict)

    # with fallback the same node runs on the CPU and the session still runs
    assert [n.runs_on for n in placement(models["erf"]["qdq"], CFG) if n.op_type == "Erf"] == ["fallback"]
    session = open_session(models["erf"]["qdq"], CFG)
    assert session.run(None, {"input": models["x"][:1]})[0].shape == (1, 10)
