"""Stage cache keys: what a stage's outputs depend on, and nothing else; the plan; budgets checked
after each stage for the task's metric."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from edgekd import api
from edgekd.config import ConfigSearch
from edgekd.pipeline import runner as pipeline
from edgekd.pipeline.cache import StageCache
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage
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
    assert next(p for p in plan if p["stage"] == "bench")["budgets"] == ["decode_tokens_per_s", "latency_p90_ms", "peak_memory_mb", "ttft_ms"]


def test_plan_lists_the_quality_budgets_of_the_tasks_metric():
    from edgekd.tasks.specs import PERPLEXITY

    def distill(plan):
        return next(p for p in plan if p["stage"] == "distill")["budgets"]

    assert distill(pipeline.plan(STAGES)) == ["distill_accuracy_drop_pt"]  # accuracy unless told
    assert distill(pipeline.plan(STAGES, PERPLEXITY)) == ["distill_perplexity_increase_pct"]


def _metric_stage(name: str, metrics: dict[str, float]) -> Stage:
    def run(ctx, inputs, scratch):
        return Outcome({k: Metric(v, "", "measured", "test") for k, v in metrics.items()})
    return Stage(name, f"writes {sorted(metrics)}", (), (), (), lambda ctx: {"metrics": metrics}, run)


def test_a_perplexity_build_checks_perplexity_budgets_and_notes_accuracy_ones(tmp_path):
    """Two stand-in stages write perplexities; the context (duck-typed: the runner reads its profile's
    budgets and its metric) is a perplexity task's with an accuracy-only profile."""
    from edgekd.config.models import Budgets
    from edgekd.tasks.specs import PERPLEXITY

    stages = (_metric_stage("teacher", {"teacher.perplexity": 10.0}), _metric_stage("distill", {"student.perplexity": 12.0}))
    ctx = SimpleNamespace(profile=SimpleNamespace(budgets=Budgets(distill_accuracy_drop_pt=1.0)), metric=PERPLEXITY)
    records = pipeline.run(ctx, StageCache(tmp_path / "cache"), tmp_path / "out", log=lambda _: None, stages=stages)
    [verdict] = records[1].verdicts
    assert (verdict.budget, verdict.value, verdict.status) == ("distill_perplexity_increase_pct", pytest.approx(20.0), "no budget")
    assert records[1].notes == ["budget distill_accuracy_drop_pt = 1 pt not checked: it is for tasks measured by accuracy, and "
                                "this build's task is measured by perplexity (set distill_perplexity_increase_pct instead)"]
    ctx.profile.budgets = Budgets(distill_perplexity_increase_pct=15.0)
    records = pipeline.run(ctx, StageCache(tmp_path / "cache"), tmp_path / "out", log=lambda _: None, stages=stages)
    assert records[1].status == "cached" and [v.status for v in records[1].verdicts] == ["fail"] and records[1].notes == []
