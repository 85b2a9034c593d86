"""The bench stage's language-model numbers as metrics, each with how it was obtained or why it is
missing: time to first token (p90 of the prompt pass at the stated prompt length), decode tokens/s
and the bench worker's peak memory. Read from a bench result (bench.json / report["latency"]) as
edgekd.perf writes it; the budgets `ttft_ms`, `decode_tokens_per_s` and `peak_memory_mb` check them
(edgekd.pipeline.budgets)."""
from __future__ import annotations

from typing import Any

from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S, PEAK_MEMORY_MB, TTFT_MS
from edgekd.pipeline.results import Metric

PEAK_HOW = ("peak resident memory (/proc/self/status VmHWM) of the bench worker process: Python, ONNX Runtime and the engine "
            "through every scenario run (SingleStream, Offline, the decoder scenarios, the per-op profile)")
NOT_A_DECODER = ("not a decoder: the bench runs TimeToFirstToken and DecodeTokensPerSecond for graphs with one token-ids input "
                 "and a [batch, sequence, vocab] logits output (or past key/values) only")


def _missing(unit: str, why: str) -> Metric:
    return Metric(None, unit, "not available", why)


def _estimated_why(what: str) -> str:
    return (f"{what}: the engine runs only on the device and the latency model estimates one batch-1 forward pass, not this; "
            "measure it there with `edgekd bench --device`")


def ttft_metric(lat: dict[str, Any]) -> Metric:
    """p90 of TimeToFirstToken's prompt passes, at the prompt length the bench used."""
    r = lat.get("ttft")
    if not isinstance(r, dict):
        return _missing("ms", "TimeToFirstToken not run: " + NOT_A_DECODER)
    if r.get("method") != "measured":
        return _missing("ms", str(r.get("how", "TimeToFirstToken not run")))
    return Metric(float(r["p90_ms"]), "ms", "measured",
                  f"p90 of {r['runs']} prompt passes at {r['prompt_tokens']} prompt tokens, {r.get('where', '')}; {r['how']}")


def decode_metric(lat: dict[str, Any]) -> Metric:
    """Tokens/s of DecodeTokensPerSecond's greedy generations (the prompt pass not counted)."""
    r = lat.get("decode")
    if not isinstance(r, dict):
        return _missing("tokens/s", "DecodeTokensPerSecond not run: " + NOT_A_DECODER)
    if r.get("method") != "measured":
        return _missing("tokens/s", str(r.get("how", "DecodeTokensPerSecond not run")))
    cache = "with a KV cache" if r.get("kv_cache") else "without a KV cache (each step re-runs the sequence)"
    return Metric(float(r["tokens_per_s"]), "tokens/s", "measured",
                  f"{r['new_tokens']} tokens x {r['generations']} generations after a {r['prompt_tokens']}-token prompt, "
                  f"{cache}, {r.get('where', '')}; {r['how']}")


def decoder_metrics(lat: dict[str, Any] | None) -> dict[str, Metric]:
    """latency.ttft_p90_ms and latency.decode_tokens_per_s of a bench result; for a result without
    them (not a decoder, an estimate, a scenario not asked for) "not available" with the reason."""
    if lat is None:
        return {TTFT_MS: _missing("ms", "the bench stage did not run"), DECODE_TOKENS_PER_S: _missing("tokens/s", "the bench stage did not run")}
    if lat.get("method") == "estimated":
        return {TTFT_MS: _missing("ms", _estimated_why("time to first token")),
                DECODE_TOKENS_PER_S: _missing("tokens/s", _estimated_why("decode tokens/s"))}
    return {TTFT_MS: ttft_metric(lat), DECODE_TOKENS_PER_S: decode_metric(lat)}


def peak_memory_metric(lat: dict[str, Any] | None) -> Metric:
    """latency.peak_rss_mb as the bench worker recorded it, or why there is none."""
    if lat is None:
        return _missing("MiB", "the bench stage did not run")
    if lat.get("method") == "estimated":
        return _missing("MiB", "peak memory: the engine runs only on the device; `edgekd bench --device` measures it there")
    if "peak_rss_mb" not in lat:
        return _missing("MiB", f"the bench that measured this build records no peak memory ({lat.get('where', 'where not recorded')})")
    if lat["peak_rss_mb"] is None:
        return _missing("MiB", "this OS does not expose /proc/self/status VmHWM")
    return Metric(float(lat["peak_rss_mb"]), "MiB", "measured", f"{PEAK_HOW}; {lat.get('where', 'this host')}")


def lm_bench_metrics(lat: dict[str, Any] | None) -> dict[str, Metric]:
    """Every metric the decoder and memory budgets read, from a bench result."""
    return {**decoder_metrics(lat), PEAK_MEMORY_MB: peak_memory_metric(lat)}


def bench_stage_metrics(lat: dict[str, Any] | None, decoder: bool) -> dict[str, Metric]:
    """What the bench stage adds to the backend's latency metrics: peak memory always; TTFT and decode
    tokens/s for a decoder (`decoder`: the task has the decoder scenarios or the profile budgets them)
    or a result that has them. `edgekd bench` re-measuring a build calls it too."""
    found = lm_bench_metrics(lat)
    peak = {PEAK_MEMORY_MB: found.pop(PEAK_MEMORY_MB)}
    return {**peak, **found} if decoder or any(k in (lat or {}) for k in ("ttft", "decode")) else peak
