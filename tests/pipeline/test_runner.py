"""Stage cache keys: what a stage's outputs depend on, and nothing else."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgekd import api
from edgekd.config import ConfigSearch
from edgekd.pipeline import runner as pipeline
from edgekd.stages import STAGES

ROOT = Path(__file__).parents[2]
EXPORT = next(s for s in STAGES if s.name == "export")


@pytest.fixture(scope="module")
def ctx():
    return api.resolve_inputs("x86-avx2", "ci", None, ConfigSearch())


@pytest.fixture
def onnx_input(tmp_path):
    path = tmp_path / "student.safetensors"
    path.write_bytes(b"weights v1")
    return {"student.safetensors": path}


def test_key_is_stable(ctx, onnx_input):
    assert pipeline.stage_key(EXPORT, ctx, onnx_input) == pipeline.stage_key(EXPORT, ctx, onnx_input)


def test_key_follows_toolchain_versions(ctx, onnx_input, monkeypatch):
    before = pipeline.stage_key(EXPORT, ctx, onnx_input)
    real = pipeline.versions
    monkeypatch.setattr(pipeline, "versions", lambda names: {**real(names), "onnxruntime": "0.0.1"})
    assert pipeline.stage_key(EXPORT, ctx, onnx_input) != before


def test_key_follows_input_content(ctx, onnx_input):
    before = pipeline.stage_key(EXPORT, ctx, onnx_input)
    onnx_input["student.safetensors"].write_bytes(b"weights v2")
    assert pipeline.stage_key(EXPORT, ctx, onnx_input) != before


def test_key_follows_the_stage_settings_only(ctx, onnx_input):
    other_opset = api.resolve_inputs(str(ROOT / "targets" / "x86-avx2.toml"), "ci", None, ConfigSearch())
    assert pipeline.stage_key(EXPORT, ctx, onnx_input) == pipeline.stage_key(EXPORT, other_opset, onnx_input)
    changed = other_opset.target.model_copy(update={"opset": 17})
    object.__setattr__(other_opset.target_file, "config", changed)
    assert pipeline.stage_key(EXPORT, other_opset, onnx_input) != pipeline.stage_key(EXPORT, ctx, onnx_input)


def test_budgets_are_not_part_of_any_key(ctx, onnx_input):
    default = api.resolve_inputs("x86-avx2", "default", None, ConfigSearch())
    # the ci and default profiles differ in budgets and in recipe; export's settings use neither
    assert pipeline.stage_key(EXPORT, ctx, onnx_input) == pipeline.stage_key(EXPORT, default, onnx_input)


def test_plan_lists_every_stage_and_its_budgets():
    plan = pipeline.plan(STAGES)
    assert [p["stage"] for p in plan] == [s.name for s in STAGES]
    assert next(p for p in plan if p["stage"] == "bench")["budgets"] == ["latency_p90_ms"]
