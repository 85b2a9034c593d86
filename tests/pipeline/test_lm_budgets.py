"""The language-model budgets of the bench stage: ttft_ms and peak_memory_mb are ceilings,
decode_tokens_per_s a floor; each is checked where the bench produced the number, and a budget set
for a build whose bench produced none is "not measured" with the metric saying why."""
from __future__ import annotations

import pytest

from edgekd.config.models import Budgets
from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S, PEAK_MEMORY_MB, TTFT_MS, check
from edgekd.pipeline.lm_metrics import (
    decoder_metrics,
    lm_bench_metrics,
    peak_memory_metric,
)
from edgekd.pipeline.results import Metric, Verdict
from edgekd.tasks.specs import PERPLEXITY

WHERE = "this host (test CPU), onnxruntime, batch 1, in the bench worker process"


def measured(value: float, unit: str) -> Metric:
    return Metric(value, unit, "measured", WHERE)


def bench_result(ttft_p90: float = 12.0, tokens_per_s: float = 80.0, peak: float | None = 300.0) -> dict:
    """A bench result with the decoder scenarios, shaped as edgekd.perf.decoder writes them."""
    return {"method": "measured", "where": WHERE, "p90_ms": 1.0, "peak_rss_mb": peak,
            "ttft": {"method": "measured", "scenario": "TimeToFirstToken", "where": WHERE, "runs": 20, "p50_ms": ttft_p90 * 0.9,
                     "p90_ms": ttft_p90, "prompt_tokens": 64, "kv_cache": True, "samples_ms": [ttft_p90] * 20, "how": "prompt pass"},
            "decode": {"method": "measured", "scenario": "DecodeTokensPerSecond", "where": WHERE, "tokens_per_s": tokens_per_s,
                       "new_tokens": 16, "generations": 3, "prompt_tokens": 64, "kv_cache": True,
                       "per_token": {"runs": 48, "p50_ms": 12.0, "p90_ms": 13.0}, "samples_ms": [12.5] * 48, "how": "greedy"}}


def verdict(budget: str, metrics: dict[str, Metric], budgets: Budgets) -> Verdict:
    return next(v for v in check("bench", metrics, budgets, PERPLEXITY) if v.budget == budget)


@pytest.mark.parametrize(("value", "limit", "status"), [(9.0, 10.0, "pass"), (10.0, 10.0, "pass"), (11.0, 10.0, "fail")])
def test_ttft_is_a_ceiling(value: float, limit: float, status: str) -> None:
    v = verdict("ttft_ms", {TTFT_MS: measured(value, "ms")}, Budgets(ttft_ms=limit))
    assert (v.status, v.floor, v.relation, v.unit) == (status, False, "<=", "ms")


@pytest.mark.parametrize(("value", "limit", "status"), [(120.0, 100.0, "pass"), (100.0, 100.0, "pass"), (80.0, 100.0, "fail")])
def test_decode_tokens_per_s_is_a_floor(value: float, limit: float, status: str) -> None:
    v = verdict("decode_tokens_per_s", {DECODE_TOKENS_PER_S: measured(value, "tokens/s")}, Budgets(decode_tokens_per_s=limit))
    assert (v.status, v.floor, v.relation) == (status, True, ">=")
    if status == "fail":
        assert "< limit" in v.describe()


@pytest.mark.parametrize(("value", "status"), [(250.0, "pass"), (260.0, "fail")])
def test_peak_memory_is_a_ceiling(value: float, status: str) -> None:
    assert verdict("peak_memory_mb", {PEAK_MEMORY_MB: measured(value, "MiB")}, Budgets(peak_memory_mb=256.0)).status == status


def test_floor_serializes_for_the_report() -> None:
    v = verdict("decode_tokens_per_s", {DECODE_TOKENS_PER_S: measured(50.0, "tokens/s")}, Budgets(decode_tokens_per_s=60.0))
    assert v.to_json()["floor"] is True and v.to_json()["status"] == "fail"


def test_unset_and_unmeasured_decoder_budgets_are_left_out() -> None:
    """A classifier's bench (no decoder numbers) and no decoder budgets: no decoder verdict lines."""
    budgets = [v.budget for v in check("bench", {"latency.p90_ms": measured(1.0, "ms")}, Budgets(), PERPLEXITY)]
    assert budgets == ["latency_p90_ms"]


def test_a_set_budget_without_a_number_is_not_measured_and_the_metric_says_why() -> None:
    metrics = decoder_metrics({"method": "measured", "where": WHERE, "p90_ms": 1.0})  # the bench ran, not a decoder
    v = verdict("ttft_ms", metrics, Budgets(ttft_ms=5.0))
    assert v.status == "not measured" and v.value is None
    assert metrics[TTFT_MS].method == "not available" and "not a decoder" in metrics[TTFT_MS].how


def test_bench_result_becomes_metrics_with_the_prompt_length() -> None:
    metrics = lm_bench_metrics(bench_result())
    assert metrics[TTFT_MS].value == 12.0 and "64 prompt tokens" in metrics[TTFT_MS].how
    assert metrics[DECODE_TOKENS_PER_S].value == 80.0 and "with a KV cache" in metrics[DECODE_TOKENS_PER_S].how
    assert metrics[PEAK_MEMORY_MB].value == 300.0 and "VmHWM" in metrics[PEAK_MEMORY_MB].how


def test_estimated_and_missing_benches_say_why() -> None:
    estimated = lm_bench_metrics({"method": "estimated", "where": "roofline", "p90_ms": 1.0})
    assert all(m.value is None and m.method == "not available" for m in estimated.values())
    assert "edgekd bench --device" in estimated[TTFT_MS].how
    assert "did not run" in lm_bench_metrics(None)[DECODE_TOKENS_PER_S].how
    assert "VmHWM" in peak_memory_metric({"method": "measured", "peak_rss_mb": None}).how
    assert "records no peak memory (trtexec" in peak_memory_metric({"method": "measured", "where": "trtexec on the Jetson"}).how
    failed = {"method": "not available", "scenario": "DecodeTokensPerSecond", "how": "DecodeTokensPerSecond failed in ONNX Runtime: x"}
    assert decoder_metrics({"method": "measured", "decode": failed})[DECODE_TOKENS_PER_S].how == failed["how"]


def test_bench_stage_adds_decoder_metrics_to_decoders_only() -> None:
    from edgekd.pipeline.lm_metrics import bench_stage_metrics

    plain = {"method": "measured", "where": WHERE, "p90_ms": 1.0, "peak_rss_mb": 80.0}
    assert set(bench_stage_metrics(plain, decoder=False)) == {PEAK_MEMORY_MB}
    assert set(bench_stage_metrics(plain, decoder=True)) == {PEAK_MEMORY_MB, TTFT_MS, DECODE_TOKENS_PER_S}
    assert set(bench_stage_metrics(bench_result(), decoder=False)) == {PEAK_MEMORY_MB, TTFT_MS, DECODE_TOKENS_PER_S}
