"""Accuracy-aware mixed precision through `edgekd compile` on x86: a trained digits CNN whose full INT8
breaks a 2 pt budget (one INT8-fragile conv, tests/mixed_model.py). With labels the quantize stage
searches (before QAD) and student_int8.onnx keeps that conv in float; without labels the tuner
judges agreement with fp32, every INT8 candidate breaks the budget and the compile stage searches."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from helpers import FAST_PROFILE, write
from mixed_model import digits_data, fragile_cnn

pytestmark = pytest.mark.slow
SCHEMA = json.loads((Path(__file__).parents[2] / "edgekd" / "report" / "report.schema.json").read_text())
BUDGET = """
[budgets]
quantize_accuracy_drop_pt = {budget}
"""


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixed")
    x, _, xt, yt = digits_data()
    for name, arrays in (("calib", {"input": x[:64]}), ("data", {"input": xt, "labels": yt}), ("unlabelled", {"input": xt[:200]})):
        (root / name).mkdir()
        for key, array in arrays.items():
            np.save(root / name / f"{key}.npy", array)
    return {"model": fragile_cnn(root / "fragile.onnx", epochs=4), "root": root}


def _compile(edgekd, fragile, tmp_path, data: str, budget: float = 2.0, extra: str = ""):
    profile = write(tmp_path / "p.toml", BUDGET.format(budget=budget) + FAST_PROFILE + extra + "\n")  # extra: [recipe.tune] keys
    return edgekd("compile", str(fragile["model"]), "--target", "x86", "--profile", str(profile), "--calib", str(fragile["root"] / "calib"),
                  "--data", str(fragile["root"] / data), "--force", out_dir=tmp_path / "b")


def _metrics(report: dict) -> dict:
    return {k: m for s in report["stages"] for k, m in s["metrics"].items()}


def test_quantize_stage_keeps_the_fragile_conv_in_float(edgekd, fragile, tmp_path) -> None:
    run = _compile(edgekd, fragile, tmp_path, "data")
    assert run.code == 0, run.err
    report = run.report
    jsonschema.validate(report, SCHEMA)
    m = _metrics(report)
    assert m["onnx_fp32.accuracy"]["value"] - m["int8.accuracy"]["value"] <= 2.0
    record = json.loads((run.out_dir / "mixed_precision.json").read_text())
    # the most sensitive op, alone past the 2-point budget (how far depends on the host's recipe: > 30 points
    # with AVX2's 7-bit weights, 15 with AVX-512 VNNI's full-range ones)
    assert record["sensitivity"][0]["op"] == "/2/Conv" and record["sensitivity"][0]["drop_pt"] > 2.0
    assert record["steps"][0]["k"] == 0 and not record["steps"][0]["holds"]  # full INT8 breaks the budget
    assert [s["k"] for s in record["steps"]] == [0, 1] and record["steps"][1]["float_ops"] == ["/2/Conv"]
    assert record["kept_in_float"] == ["/2/Conv"]
    quantize = next(s for s in report["stages"] if s["name"] == "quantize")
    assert any(n.startswith("mixed precision:") and "/2/Conv" in n for n in quantize["notes"])
    mixed = report["tuning"]["mixed_precision"]
    assert mixed["steps"][1]["holds"]
    md = (run.out_dir / "report.md").read_text()
    assert "### Mixed precision (ops kept in float)" in md and "| k=1 | /2/Conv |" in md
    html = (run.out_dir / "report.html").read_text()
    assert "Mixed precision (ops kept in float)" in html and "<td>/2/Conv</td>" in html


def test_two_fragile_layers_need_two_steps(edgekd, fragile, tmp_path) -> None:
    """The conv and the linear layer both INT8-fragile: k = 1 keeps one of them float and still
    breaks the budget, k = 2 holds; the engine's INT8 graph keeps both in float."""
    model = fragile_cnn(tmp_path / "two.onnx", epochs=4, fragile_linear=True)
    run = _compile(edgekd, {**fragile, "model": model}, tmp_path, "data")
    assert run.code == 0, run.err
    record = json.loads((run.out_dir / "mixed_precision.json").read_text())
    assert {r["op"] for r in record["sensitivity"][:2]} == {"/2/Conv", "/6/Gemm"}
    assert [(s["k"], s["holds"]) for s in record["steps"]] == [(0, False), (1, False), (2, True)]
    assert set(record["kept_in_float"]) == {"/2/Conv", "/6/Gemm"}


def test_nothing_helps_in_the_quantize_stage_the_budget_still_stops_the_build(edgekd, fragile, tmp_path) -> None:
    """Labelled data, no op may stay float (mixed_precision_max_float 0.1 of 7): the full INT8 graph
    stays, the quantize budget stops the build as without the search, and the record says what ran."""
    run = _compile(edgekd, fragile, tmp_path, "data", extra="mixed_precision_max_float = 0.1")
    assert run.code == 1 and "quantize_accuracy_drop_pt" in run.err
    record = json.loads((run.out_dir / "mixed_precision.json").read_text())
    assert [s["k"] for s in record["steps"]] == [0] and record["kept_in_float"] == []
    assert "stays the full INT8 graph" in record["how"] and record["sensitivity"][0]["op"] == "/2/Conv"
    quantize = next(s for s in run.report["stages"] if s["name"] == "quantize")
    assert any("no step held the budget" in n for n in quantize["notes"])


def test_switch_off_no_search(edgekd, fragile, tmp_path) -> None:
    run = _compile(edgekd, fragile, tmp_path, "data", extra="mixed_precision = false")
    assert run.code == 1 and "quantize_accuracy_drop_pt" in run.err  # today's behaviour: PTQ breaks the budget, the build stops
    assert not (run.out_dir / "mixed_precision.json").exists()


def test_int8_within_budget_no_search(edgekd, fragile, tmp_path) -> None:
    run = _compile(edgekd, fragile, tmp_path, "data", budget=100.0)
    assert run.code == 0, run.err
    assert not (run.out_dir / "mixed_precision.json").exists()
    assert "mixed_precision" not in (run.report["tuning"] or {})


def test_compile_stage_searches_without_labels(edgekd, fragile, tmp_path) -> None:
    """No labels: the quantize stage cannot measure accuracy; the tuner's agreement with fp32 breaks
    the budget for every INT8 candidate, the search runs there and its graph joins the candidates."""
    run = _compile(edgekd, fragile, tmp_path, "unlabelled")
    assert run.code == 0, run.err
    tuning = run.report["tuning"]
    jsonschema.validate(run.report, SCHEMA)
    mixed = tuning["mixed_precision"]
    assert mixed["ran"] and mixed["trigger"].startswith("compile:")
    assert mixed["sensitivity"][0]["op"] == "/2/Conv"
    holding = [s for s in mixed["steps"] if s["holds"]]
    assert holding and holding[0]["float_ops"] == ["/2/Conv"] and holding[0]["variant"] == "int8-qdq-mixed-k1"
    assert "int8-qdq-mixed-k1" in tuning["variants"]
    best = tuning["rows"][tuning["chosen"]]
    assert not any(p.startswith("accuracy") for p in best["problems"])  # the chosen engine meets the budget
    assert mixed["kept_in_float"] == (["/2/Conv"] if best["variant"] == "int8-qdq-mixed-k1" else [])


def test_nothing_helps_fp32_with_the_steps_recorded(edgekd, fragile, tmp_path) -> None:
    """mixed_precision_max_float 0.1 of 7 ops: not one op may stay float, so no step can hold; fp32 stands."""
    run = _compile(edgekd, fragile, tmp_path, "unlabelled", extra="mixed_precision_max_float = 0.1")
    assert run.code == 0, run.err
    tuning = run.report["tuning"]
    mixed = tuning["mixed_precision"]
    assert mixed["ran"] and "fp32 stands" in mixed["how"]
    assert [s["k"] for s in mixed["steps"]] == [0] and not mixed["steps"][0]["holds"]
    assert not any(s["variant"] for s in mixed["steps"]) and mixed["kept_in_float"] == []
    assert tuning["rows"][tuning["chosen"]]["precision"] == "fp32"
