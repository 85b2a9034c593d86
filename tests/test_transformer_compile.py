"""`edgekd compile` of the real optimum-exported tiny BERT (input_ids, attention_mask, token_type_ids) for
each target family: x86 fuses the transformer and tunes dynamic beside static INT8; the HTP gets
uint16 LayerNorm/Softmax in a uint8 graph; the TensorRT bundle pins every input and carries
symmetric INT8 Q/DQ. One build per target, shared by the tests of this module."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from helpers import run_cli, write
from onnx import numpy_helper

pytestmark = pytest.mark.slow
SCHEMA = json.loads((Path(__file__).parent.parent / "edgekd" / "report" / "report.schema.json").read_text())
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
FAST = """
[recipe.bench]
warmup_runs = 2
min_runs = 10
max_runs = 20
max_seconds = 0.3
offline_max_batch = 2
offline_seconds = 0.05
profile_runs = 1
compare = false

[recipe.tune]
rounds = 1
runs_per_round = 5
warmup_runs = 1
"""


@pytest.fixture(scope="module")
def compiled(zoo, cache_dir, tmp_path_factory):
    """compiled(target, extra_profile="") -> the build folder of `edgekd compile bert.onnx --target T`."""
    root, done = tmp_path_factory.mktemp("bert-compile"), {}

    def build(target: str, extra: str = "") -> Path:
        if (target, extra) not in done:
            out = root / f"{target}-{len(done)}"
            profile = write(root / f"profile-{len(done)}.toml", FAST + extra)
            code, _, err = run_cli(["compile", str(zoo("bert")), "--target", target, "--profile", str(profile), "--out", str(out)],
                                   cache_dir)
            assert code == 0, err
            done[(target, extra)] = out
        return done[(target, extra)]

    return build


def _report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, SCHEMA)
    return report


def _stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["name"] == name)


def test_x86_fuses_the_transformer_before_quantizing(compiled) -> None:
    out = compiled("x86")
    quantize = _stage(_report(out), "quantize")
    fused = onnx.load(str(out / "student_fused.onnx"))
    ops = {n.op_type for n in fused.graph.node}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"} <= ops
    note = next(n for n in quantize["notes"] if n.startswith("transformer graph fused"))
    assert all(f"{op} x" in note for op in ("Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"))
    parity = quantize["metrics"]["fusion.max_abs_diff"]
    assert parity["method"] == "measured" and parity["value"] <= 1e-3 and "left padding, gaps" in parity["how"]
    assert quantize["metrics"]["fusion.agreement_pct"]["value"] == 100.0
    # the static Q/DQ graph is quantized from the fused one: Q/DQ around its MatMuls, the fused ops kept
    int8 = {n.op_type for n in onnx.load(str(out / "student_int8.onnx")).graph.node}
    assert {"Attention", "QuantizeLinear", "DequantizeLinear"} <= int8


def test_x86_tuner_measures_dynamic_and_static_int8_and_records_the_choice(compiled) -> None:
    from edgekd.backends.ort.tune import choose

    out = compiled("x86")
    report = _report(out)
    tuning = report["tuning"]
    rows = tuning["rows"]
    considered = rows + tuning["pruned"]  # pruning times only the promising candidates in full (edgekd.backends.ort.prune)
    assert {"int8-qdq", "int8-dynamic", "int8-dynamic-unfused", "fp32"} <= {r["variant"] for r in considered}  # fusion measured too
    assert all(isinstance(r["accuracy"], float) and 0 <= r["accuracy"] <= 100 and r["p90_ms"] > 0 for r in rows)
    assert {"student_int8.onnx", "student_int8_dynamic.onnx", "student_fused.onnx"} <= {r["model"] for r in considered}
    assert "quantize_dynamic" in tuning["variants"]["int8-dynamic"] and "fused" in tuning["variants"]["fp32"]
    assert "student.onnx" in tuning["variants"]["int8-dynamic-unfused"]  # quantized from the given, unfused graph
    assert any(n.startswith("MultiHeadAttention fusion not used") and "masked scores" in n for n in tuning["left_out"])
    assert tuning["chosen"] == choose(rows)[0] and tuning["reason"] == choose(rows)[1]
    best = rows[tuning["chosen"]]
    engine = json.loads((out / "engine.json").read_text())
    assert engine["precision"] == best["precision"] and engine["session"] == best["session"]
    compile_notes = _stage(report, "compile")["notes"]
    assert any(n.startswith(f"tuned: {best['variant']}") for n in compile_notes)
    assert any(n.startswith(f"{best['variant']} is ") for n in compile_notes)
    assert "int8-dynamic" in (out / "report.md").read_text()


def test_x86_budgets_decide_between_the_variants(compiled) -> None:
    """A size budget between the INT8 variants' sizes and the fp32 graph's rules fp32 out."""
    rows = [r for r in _report(compiled("x86"))["tuning"]["rows"] if r.get("runtime", "onnxruntime") == "onnxruntime"]
    int8_mb = max(r["size_mb"] for r in rows if r["precision"] == "int8")  # (OpenVINO's IRs have sizes of their own)
    fp32_mb = next(r["size_mb"] for r in rows if r["precision"] == "fp32")
    assert int8_mb < fp32_mb
    tuning = _report(compiled("x86", f"\n[budgets]\nsize_mb = {(int8_mb + fp32_mb) / 2}\n"))["tuning"]
    best = tuning["rows"][tuning["chosen"]]
    assert best["precision"] == "int8" and not best["problems"]
    assert all(any(p.startswith("size") for p in r["problems"]) for r in tuning["rows"]
               if r["precision"] == "fp32" and r.get("runtime", "onnxruntime") == "onnxruntime")


def _qdq_zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[2]] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def test_tensorrt_bundle_pins_every_text_input_and_carries_symmetric_int8(compiled) -> None:
    out = compiled("jetson-orin")
    manifest = json.loads((out / "bundle" / "bundle.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == INPUTS and manifest["dynamic_inputs"] == INPUTS
    for argv in (manifest["build"]["argv"], manifest["measure"]["argv"]):
        shapes = [a for a in argv if a.startswith("--shapes=")]
        assert shapes == ["--shapes=" + ",".join(f"{name}:1x128" for name in INPUTS)]
    script = (out / "bundle" / "build_engine.sh").read_text()
    assert "--shapes=input_ids:1x128,attention_mask:1x128,token_type_ids:1x128" in script and "--int8" in script
    model = onnx.load(str(out / "bundle" / "model.onnx"))
    zero_points = _qdq_zero_points(model)
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric INT8 only
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)  # no ONNX Runtime fusions for TensorRT
    assert not (out / "student_fused.onnx").exists()
    assert any("engine NOT built here" in n for n in _stage(_report(out), "compile")["notes"])


def test_htp_runs_uint16_layernorm_and_softmax_in_a_uint8_graph(compiled) -> None:
    out = compiled("snapdragon-8gen3")
    report = _report(out)
    quantize = _stage(report, "quantize")
    assert quantize["metrics"]["int8.rule_violations"]["value"] == 0
    assert any(n.startswith("HTP mixed precision") for n in quantize["notes"])
    model = onnx.load(str(out / "student_int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}

    def input_type(node: onnx.NodeProto) -> np.dtype:
        dq = producers[node.input[0]]
        return inits[dq.input[2]].dtype

    wide = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert wide and all(input_type(n) == np.uint16 for n in wide)
    types = {z.dtype.name for z in _qdq_zero_points(model)}
    assert {"uint8", "uint16"} <= types <= {"uint8", "uint16", "int32"}  # int32: biases
    support = json.loads((out / "support.json").read_text())
    assert support["counts"]["unsupported"] == 0 and support["counts"]["accelerator"] > 0.99 * len(support["nodes"])
    agreement = _stage(report, "evaluate")["metrics"]["engine.agreement_pct"]
    assert "QNN HTP" in agreement["how"] and agreement["value"] >= 50.0  # the context binary run on the emulated HTP
