"""edgekd/gate/decoder_checks.py: TTFT (up is worse), decode tokens/s (down is worse) and peak memory
(up is worse) against the baseline, on report["latency"] shaped as the bench writes it for a decoder
(the slow test_gate_lm.py runs them on a real LM build's report)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.config.models import GateConfig
from edgekd.gate import decoder_checks as dc
from edgekd.gate.reports import Report

PERPLEXITY_TASK = {"name": "causal-lm", "metric": {"name": "perplexity", "unit": "", "higher_is_better": False,
                                                   "degradation_name": "perplexity_increase_pct"}}
CFG = GateConfig(bootstrap_resamples=500)


def noisy(center: float, n: int, seed: int) -> list[float]:
    """Positive samples around `center` (5 % spread), seeded."""
    return list(center * (1.0 + 0.05 * np.random.default_rng(seed).standard_normal(n)).clip(0.5))


def latency(ttft_ms: float = 10.0, token_ms: float = 5.0, peak: float | None = 200.0, seed: int = 0) -> dict[str, Any]:
    where = "this host (test CPU), batch 1, in the bench worker process"
    return {"method": "measured", "where": where, "p90_ms": 1.0, "samples_ms": noisy(1.0, 100, seed), "peak_rss_mb": peak,
            "ttft": {"method": "measured", "where": where, "runs": 60, "prompt_tokens": 64, "p90_ms": ttft_ms,
                     "samples_ms": noisy(ttft_ms, 60, seed + 1), "how": "prompt pass"},
            "decode": {"method": "measured", "where": where, "tokens_per_s": 1000.0 / token_ms, "new_tokens": 32, "generations": 3,
                       "prompt_tokens": 64, "samples_ms": noisy(token_ms, 96, seed + 2), "how": "greedy"}}


def report(role: str, lat: dict[str, Any] | None, task: dict[str, Any] | None = None) -> Report:
    return Report(role, Path(f"{role}/report.json"), {"schema_version": 1, "stages": [], "task": task or PERPLEXITY_TASK, "latency": lat})


def pair(base: dict[str, Any] | None, cand: dict[str, Any] | None) -> tuple[Report, Report]:
    return report("baseline", base), report("candidate", cand)


def test_ttft_surely_up_fails_and_the_same_passes() -> None:
    slow = dc.ttft(*pair(latency(), latency(ttft_ms=15.0, seed=7)), CFG)
    assert slow.status == "fail" and slow.change > 40 and slow.interval[0] > 10 and "64-token prompt" in slow.detail
    assert dc.ttft(*pair(latency(), latency(seed=7)), CFG).status in ("pass", "inconclusive")
    faster = dc.ttft(*pair(latency(), latency(ttft_ms=5.0, seed=7)), CFG)
    assert faster.status == "pass" and faster.change < 0


def test_decode_tokens_per_s_down_fails_up_passes() -> None:
    slower = dc.decode(*pair(latency(), latency(token_ms=7.0, seed=3)), CFG)  # 200 -> ~143 tokens/s
    assert slower.status == "fail" and slower.change < -20 and slower.interval[1] < -10
    assert slower.baseline > slower.candidate and slower.threshold_text == ">= -10 %"
    faster = dc.decode(*pair(latency(), latency(token_ms=3.0, seed=3)), CFG)  # tokens/s up: never a regression
    assert faster.status == "pass" and faster.change > 0
    loose = dc.decode(*pair(latency(), latency(token_ms=7.0, seed=3)), GateConfig(max_decode_tokens_per_s_decrease_pct=50.0))
    assert loose.status == "pass"


def test_peak_memory_up_fails() -> None:
    grown = dc.peak_memory(*pair(latency(), latency(peak=240.0)), CFG)
    assert (grown.status, round(grown.change)) == ("fail", 20)
    assert dc.peak_memory(*pair(latency(), latency(peak=205.0)), CFG).status == "pass"
    assert dc.peak_memory(*pair(latency(), latency(peak=None)), CFG).status == "not measured"


@pytest.mark.parametrize(("cand", "why"), [
    (None, "bench stage did not run"),
    ({"method": "estimated", "where": "roofline", "latency_ms": 1.0, "p90_ms": 1.0}, "estimated"),
    ({"method": "measured", "where": "x", "p90_ms": 1.0, "samples_ms": [1.0] * 50}, "not a decoder"),
])
def test_a_missing_decoder_measurement_is_not_measured_with_why(cand: dict[str, Any] | None, why: str) -> None:
    for check in (dc.ttft(*pair(latency(), cand), CFG), dc.decode(*pair(latency(), cand), CFG)):
        assert check.status == "not measured" and why in check.detail


def test_too_few_samples_say_so() -> None:
    few = latency()
    few["ttft"]["samples_ms"] = few["ttft"]["samples_ms"][:5]
    check = dc.ttft(*pair(latency(), few), CFG)
    assert check.status == "not measured" and "latency.ttft.samples_ms: only 5" in check.detail


def test_classifier_builds_get_peak_memory_only() -> None:
    accuracy = {"name": "image-classification", "metric": {"name": "accuracy", "unit": "%", "higher_is_better": True,
                                                          "degradation_name": "accuracy_drop_pt"}}
    plain = {k: v for k, v in latency().items() if k not in dc.DECODER_KEYS}
    names = [c.name for c in dc.lm_checks(report("baseline", plain, accuracy), report("candidate", plain, accuracy), CFG)]
    assert names == ["peak memory"]
    assert [c.name for c in dc.lm_checks(*pair(latency(), latency()), CFG)] == ["time to first token p90", "decode tokens/s", "peak memory"]
