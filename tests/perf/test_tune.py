"""Engine tuning: the choice rule on given rows, and what a real x86 build recorded."""
from __future__ import annotations

from edgekd.backends.ort.tune import choose


def _row(variant: str, p90: float, problems: list[str] | None = None, threads: int = 1) -> dict:
    return {"variant": variant, "p90_ms": p90, "problems": problems or [], "threads": threads,
            "session": {"graph_optimization_level": "all", "execution_mode": "sequential"}}


def test_fastest_meeting_every_budget_wins() -> None:
    rows = [_row("fp32", 0.02, ["size 2.0 MB > size_mb 1.0"]), _row("int8-qdq", 0.03), _row("int8-qoperator", 0.05)]
    chosen, reason = choose(rows)
    assert chosen == 1
    assert "1 faster candidate(s) broke a budget" in reason and "int8-qoperator" in reason and "1.67x" in reason


def test_without_a_fitting_candidate_accuracy_comes_first() -> None:
    rows = [_row("int8-qdq", 0.02, ["accuracy 80.00% is 9.00 pt below fp32 > quantize_accuracy_drop_pt 1.0"]),
            _row("fp32", 0.04, ["p90 0.04 ms > latency_p90_ms 0.01"])]
    chosen, reason = choose(rows)
    assert chosen == 1 and "holds the accuracy budget" in reason


def test_nothing_holds_accuracy_keeps_the_fastest() -> None:
    rows = [_row("int8-qdq", 0.02, ["accuracy a"]), _row("int8-qoperator", 0.03, ["accuracy b"])]
    assert choose(rows) == (0, "no candidate meets every budget: kept the fastest candidate")


def test_real_build_tuned_over_the_targets_space(cold_build) -> None:
    """targets/x86-*.toml [tune]: int8 (QDQ; dynamic is for transformers) and fp32 x threads {1, all} x levels {extended, all}."""
    import json

    engine = json.loads((cold_build.out_dir / "engine.json").read_text())
    tuning = cold_build.report["tuning"]
    assert tuning == engine["tuning"]
    rows = tuning["rows"]
    considered = rows + tuning["pruned"]  # pruning (edgekd.backends.ort.prune) times only the promising ones in full
    ort = [r for r in considered if r["runtime"] == "onnxruntime"]  # [tune] runtimes: OpenVINO's candidates beside them
    names = {r["variant"] for r in ort}
    assert {"int8-qdq", "fp32"} <= names and all(n.startswith("int8-qdq-") for n in names - {"int8-qdq", "fp32"})
    recipes = len(names) - 2  # the target's [tune] qdq_recipes: a second Q/DQ recipe per x86 host class
    openvino = {r["variant"] for r in considered if r["runtime"] == "openvino"}
    assert openvino == {"openvino-fp32", "openvino-int8-nncf"} or any(n.startswith("OpenVINO candidates left out") for n in tuning["left_out"])
    # the target allows dynamic INT8 too, but for transformer graphs only: this CNN does not get it
    assert any(note.startswith("int8-dynamic not tried") for note in tuning["left_out"])
    assert not (cold_build.out_dir / "student_fused.onnx").exists()
    assert len(ort) == (2 + recipes) * 2 * 2 and all(r["runs"] == 3 * 100 for r in rows)  # profiles/ci.toml [recipe.tune]
    assert all(p["why"] and p["stage"] in ("accuracy", "estimate", "screening") for p in tuning["pruned"])
    assert all(r["timing_s"]["full"] > 0 for r in rows) and tuning["times"]["full_s"] > 0
    assert [r["p90_ms"] for r in rows] == sorted(r["p90_ms"] for r in rows)
    best = rows[tuning["chosen"]]
    assert tuning["chosen"] == choose(rows)[0]
    # the engine is the chosen candidate: its precision, session settings and accuracy
    assert engine["precision"] == best["precision"] and engine["session"] == best["session"]
    assert cold_build.report["accuracy"]["engine"]["value"] == best["accuracy"]
    bundle = json.loads((cold_build.out_dir / "bundle" / "bundle.json").read_text())
    assert bundle["session"] == best["session"]
    assert not list(cold_build.out_dir.glob("student_int8_*.onnx")), "tuning variants are not build outputs"


def test_qoperator_variant_is_a_qlinear_graph(cold_build, tmp_path) -> None:
    """The QOperator candidate (a [tune] quant_formats option): the same recipe as QLinear* ops."""
    import numpy as np
    import onnx

    from edgekd.config.models import QuantizeConfig
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.quantize import quantize_int8

    out = tmp_path / "q.onnx"
    calib = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    quantize_int8(cold_build.out_dir / "student.onnx", out, {"input": calib}, QuantizeConfig(), TargetQuantize(), quant_format="qoperator")
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QLinearConv" in ops and "Conv" not in ops
    assert ops.count("DequantizeLinear") <= 2  # only at the graph's edges, not around every weight
