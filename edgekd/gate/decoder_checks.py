"""The gate's checks of the language-model numbers against the baseline: time to first token (up is
worse) and decode tokens/s (down is worse), decided like p90 latency on a bootstrap interval of the
raw samples the bench keeps (latency.ttft.samples_ms: prompt passes, p90; latency.decode.samples_ms:
per-token times, their mean, since tokens/s = 1000 / mean per-token ms); and the bench worker's peak
memory (up is worse), one number per build, compared as it is (no interval)."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.config.models import GateConfig
from edgekd.gate.checks import Check, not_checked, pct_change
from edgekd.gate.reports import Report
from edgekd.gate.stats import Decision, RatioInterval, mean_rows, p90_ratio, p90_rows

DECODER_KEYS = ("ttft", "decode")  # report["latency"] keys of the decoder scenarios (edgekd.perf.decoder)


def _scenario(report: Report, key: str) -> tuple[dict[str, Any] | None, str]:
    """report["latency"][key] where it was measured, else None and why not."""
    lat = report.latency
    if lat is None:
        return None, f"no latency in the {report.role} report: its bench stage did not run"
    if lat.get("method") == "estimated":
        return None, (f"the {report.role}'s latency is estimated (the engine runs only on the device): the latency model "
                      "estimates no prompt pass or decoding")
    r = lat.get(key)
    if not isinstance(r, dict):
        return None, f"the {report.role} is not a decoder (its bench ran no {key} scenario)"
    if r.get("method") != "measured":
        return None, f"{report.role}: {r.get('how', 'not measured')}"
    return r, ""


def _interval(base: Report, cand: Report, key: str, cfg: GateConfig, statistic: Any) -> RatioInterval | str:
    """The bootstrap interval of the two reports' `key` samples, or why there is none."""
    sides = [_scenario(r, key) for r in (base, cand)]
    missing = [why for r, why in sides if r is None]
    if missing:
        return "; ".join(missing)
    b, c = (r for r, _ in sides)
    assert b is not None and c is not None
    try:
        return p90_ratio(np.asarray(b.get("samples_ms")), np.asarray(c.get("samples_ms")), cfg.confidence,
                         cfg.bootstrap_resamples, cfg.seed, statistic)
    except (TypeError, ValueError) as exc:
        return f"latency.{key}.samples_ms: {str(exc).replace('latency.samples_ms', 'the samples')}"


def _where(base: Report, cand: Report, key: str) -> str:
    b, c = ((r.latency or {}).get(key) or {} for r in (base, cand))
    prompt = "" if b.get("prompt_tokens") == c.get("prompt_tokens") else \
        f"; prompt lengths differ: baseline {b.get('prompt_tokens')}, candidate {c.get('prompt_tokens')} tokens"
    return f"baseline measured on {b.get('where', '?')}, candidate on {c.get('where', '?')}{prompt}"


def ttft(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """TTFT p90 (the prompt pass at batch 1): fails when the p90 ratio's whole interval is above the limit."""
    name, pct = "time to first token p90", cfg.max_ttft_increase_pct
    text = f"<= +{pct:g} %"
    ci = _interval(base, cand, "ttft", cfg, p90_rows)
    if isinstance(ci, str):
        return not_checked(name, "ms", pct, text, ci)
    prompt = (cand.latency or {})["ttft"].get("prompt_tokens")
    b, c = ((r.latency or {})["ttft"]["samples_ms"] for r in (base, cand))
    detail = (f"{prompt}-token prompt; p90 ratio {ci.ratio:.3f}, {ci.confidence:.0%} interval [{ci.low:.3f}, {ci.high:.3f}] by "
              f"{ci.describe()}; {_where(base, cand, 'ttft')}")
    return Check(name, "regression", ci.decide(1.0 + pct / 100.0), "ms", float(p90_rows(np.asarray(b))),
                 float(p90_rows(np.asarray(c))), pct_change(ci.ratio, 1.0), "%", (pct_change(ci.low, 1.0), pct_change(ci.high, 1.0)), pct, text, detail)


def decode(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """Decode tokens/s: fails when the whole interval of tokens/s(candidate) / tokens/s(baseline) is
    below 1 - max_decode_tokens_per_s_decrease_pct (the mean per-token time surely up by that much)."""
    name, pct = "decode tokens/s", cfg.max_decode_tokens_per_s_decrease_pct
    text = f">= -{pct:g} %"
    ci = _interval(base, cand, "decode", cfg, mean_rows)
    if isinstance(ci, str):
        return not_checked(name, "tokens/s", pct, text, ci)
    # on time per token: up by 1/(1 - pct) or more is tokens/s down by pct; any slowdown is within a 100 % decrease
    status: Decision = "pass" if pct >= 100 else ci.decide(1.0 / (1.0 - pct / 100.0))
    b, c = (1000.0 / float(np.mean((r.latency or {})["decode"]["samples_ms"])) for r in (base, cand))
    detail = (f"tokens/s = 1000 / mean per-token ms; per-token time ratio {ci.ratio:.3f}, {ci.confidence:.0%} interval "
              f"[{ci.low:.3f}, {ci.high:.3f}] by {ci.describe()}; {_where(base, cand, 'decode')}")
    return Check(name, "regression", status, "tokens/s", b, c, pct_change(1.0 / ci.ratio, 1.0), "%",
                 (pct_change(1.0 / ci.high, 1.0), pct_change(1.0 / ci.low, 1.0)), pct, text, detail)


def peak_memory(base: Report, cand: Report, cfg: GateConfig) -> Check:
    """The bench worker's peak RSS: up by more than max_peak_memory_increase_pct fails."""
    name, pct = "peak memory", cfg.max_peak_memory_increase_pct
    text = f"<= +{pct:g} %"
    values = {r.role: (r.latency or {}).get("peak_rss_mb") for r in (base, cand)}
    missing = [role for role, v in values.items() if not isinstance(v, (int, float)) or v <= 0]
    if missing:
        return not_checked(name, "MiB", pct, text, f"no measured peak memory (latency.peak_rss_mb) in the {' and '.join(missing)} "
                        "report: its bench did not run here (estimated latency), or this OS has no /proc VmHWM")
    b, c = float(values["baseline"]), float(values["candidate"])  # type: ignore[arg-type]
    change = pct_change(c, b)
    return Check(name, "regression", "fail" if change > pct else "pass", "MiB", b, c, change, "%", None, pct, text,
                 "peak resident memory (VmHWM) of the bench worker process (Python + ONNX Runtime + the engine through "
                 "every scenario): one number per build, no interval; a change of a few MiB can be the Python side")


def is_decoder(report: Report) -> bool:
    lat = report.latency or {}
    return report.metric.name == "perplexity" or any(k in lat for k in DECODER_KEYS)


def lm_checks(base: Report, cand: Report, cfg: GateConfig) -> list[Check]:
    """Peak memory always; TTFT and decode tokens/s where either build is a decoder (a causal LM, or a
    bench with the decoder scenarios)."""
    found = [ttft(base, cand, cfg), decode(base, cand, cfg)] if is_decoder(base) or is_decoder(cand) else []
    return found + [peak_memory(base, cand, cfg)]
