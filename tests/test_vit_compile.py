"""`edgekd compile` of the optimum-exported tiny ViT for x86: the tuner makes the MultiHeadAttention-
fused graph (edgekd.graph.mha_fusion) a variant source beside the plain and ONNX Runtime-fused ones,
checked against the given graph's outputs, and measures its fp32 and dynamic INT8 like the others."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from helpers import FAST_PROFILE, run_cli, write

pytestmark = pytest.mark.slow


def test_x86_tunes_the_multi_head_attention_fused_vit(zoo, cache_dir, tmp_path: Path) -> None:
    profile = write(tmp_path / "profile.toml", FAST_PROFILE)
    out = tmp_path / "out"
    code, _, err = run_cli(["compile", str(zoo("vit")), "--target", "x86", "--profile", str(profile), "--out", str(out)], cache_dir)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, json.loads((Path(__file__).parent.parent / "edgekd" / "report" / "report.schema.json").read_text()))
    tuning = report["tuning"]
    considered = {r["variant"]: r for r in tuning["rows"] + tuning["pruned"]}
    assert {"int8-dynamic", "int8-dynamic-unfused", "int8-dynamic-mha", "fp32-mha"} <= set(considered)
    how = tuning["variants"]["int8-dynamic-mha"]
    assert "quantize_dynamic of student_fp32_mha.onnx" in how and "MultiHeadAttention (2 heads" in how and "outputs within" in how
    assert considered["fp32-mha"]["model"] == "student_fp32_mha.onnx"
    assert considered["int8-dynamic-mha"]["model"] == "student_int8_dynamic-mha.onnx"
    timed = [r for r in tuning["rows"] if r["variant"] in ("int8-dynamic-mha", "fp32-mha")]
    assert all(r["p90_ms"] > 0 and 0 <= r["accuracy"] <= 100 for r in timed)
