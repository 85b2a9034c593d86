"""report.md sections on performance: measured latency (scenarios, decoder scenarios, op profile,
comparison points) and the compile stage's engine tuning."""
from __future__ import annotations

from typing import Any

from edgekd.report.format import cell, fmt
from edgekd.report.markdown_tuning_cost import tuning_cost


def measured_latency(lat: dict[str, Any], host_cpu: str) -> list[str]:
    lines = ["**SingleStream** (batch 1, one query at a time; p90 is the headline):", "",
             "| p50 | p90 | p99 | mean | min | max | runs | CV | threads | engine RSS | process peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {fmt(lat['p50_ms'], 'ms')} | **{fmt(lat['p90_ms'], 'ms')}** | {fmt(lat['p99_ms'], 'ms')} | {fmt(lat['mean_ms'], 'ms')} "
             f"| {fmt(lat['min_ms'], 'ms')} | {fmt(lat['max_ms'], 'ms')} | {lat['runs']} | {fmt(lat.get('cv'))} "
             f"| {lat.get('intra_op_threads', 'n/a')} | {fmt(lat.get('engine_rss_mb'), 'MiB')} | {fmt(lat.get('peak_rss_mb'), 'MiB')} |", "",
             f"Measured: {lat.get('where', 'on this host (' + host_cpu + ')')}, after warm-up, in a separate process; "
             "CV = std / mean; the raw samples are in report.json under `latency.samples_ms`.", ""]
    offline = lat.get("scenarios", {}).get("Offline")
    if offline:
        lines += [f"**Offline**: {fmt(offline['throughput_per_s'], '/s')} at batch {offline['best_batch']} (best of the batch sizes tried).", "",
                  "| batch | throughput | mean | p90 | runs |", "|---|---|---|---|---|"]
        lines += [f"| {b['batch']} | {fmt(b['throughput_per_s'], '/s')} | {fmt(b['mean_ms'], 'ms')} | {fmt(b['p90_ms'], 'ms')} | {b['runs']} |"
                  for b in offline["batches"]]
        lines += ["", f"How: {cell(offline['how'])}.", ""]
    lines += decoder(lat)
    if lat.get("top_ops"):
        lines += ["**Top ops by time**:", "", "| op type | time per run | share | nodes |", "|---|---|---|---|"]
        lines += [f"| {op['op_type']} | {fmt(op['ms'], 'ms')} | {fmt(op['pct'], '%')} | {op['nodes']} |" for op in lat["top_ops"]]
        lines += ["", f"How: {cell(lat.get('top_ops_how', ''))}.", ""]
    return lines + comparison(lat)


def decoder(lat: dict[str, Any]) -> list[str]:
    """TimeToFirstToken ("ttft") and DecodeTokensPerSecond ("decode"), present for decoder models only."""
    rows = [_decoder_row(name, lat[key]) for name, key in (("TimeToFirstToken", "ttft"), ("DecodeTokensPerSecond", "decode"))
            if lat.get(key)]
    genai = (lat.get("decode") or {}).get("onnxruntime_genai")
    if genai:  # the same generation through onnxruntime-genai (edgekd.perf.genai_decode)
        rows.append(_decoder_row("DecodeTokensPerSecond, onnxruntime-genai", {"kv_cache": True, "where": "", **genai}))
    if not rows:
        return []
    return ["**Decoder** (batch 1):", "", "| scenario | result | p50 | p90 | runs | how obtained |", "|---|---|---|---|---|---|",
            *rows, "", "DecodeTokensPerSecond's p50/p90 are per generated token; the prompt pass is TimeToFirstToken.", ""]


def _decoder_row(name: str, r: dict[str, Any]) -> str:
    how = cell(f"{r['method']}: {r.get('where', '')}; {r['how']}")
    if r["method"] != "measured":
        return f"| {name} | n/a | n/a | n/a | n/a | {how} |"
    if name == "TimeToFirstToken":
        headline, stats = f"{r['prompt_tokens']}-token prompt", r
    else:
        headline = f"**{fmt(r['tokens_per_s'], 'tokens/s')}**, {r['new_tokens']} tokens" + ("" if r["kv_cache"] else " (no KV cache)")
        if "same_tokens_as_loop" in r:
            headline += ", same tokens as edgekd's loop" if r["same_tokens_as_loop"] else ", **tokens differ from edgekd's loop**"
        stats = r["per_token"]
    return f"| {name} | {headline} | {fmt(stats['p50_ms'], 'ms')} | {fmt(stats['p90_ms'], 'ms')} | {stats['runs']} | {how} |"


def comparison(lat: dict[str, Any]) -> list[str]:
    points = lat.get("compare")
    if not points:
        return []
    lines = ["**Teacher and fp32 student for comparison** (p90, batch 1):", "", "| model | p90 | how obtained |", "|---|---|---|"]
    for name, label in (("teacher", "teacher"), ("student_fp32", "student fp32"), ("engine", "engine")):
        p = points[name]
        lines.append(f"| {label} | {fmt(p['p90_ms'], 'ms')} | {cell(p['method'] + ': ' + p['how'])} |")
    return lines + [""]


def tuning(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return []
    generation = any("generation_ms" in r for r in t["rows"])  # a decoder: ranked by prompt pass + N decode steps
    extra = " TTFT p90 | generation |" if generation else ""
    lines = ["## Engine tuning", "", f"Chosen: **row {t['chosen'] + 1}** — {cell(t['reason'])}.", "",
             f"| # | model | threads | optimization | mode | p50 | p90 |{extra} accuracy | size | budgets |",
             "|---|---|---|---|---|---|---|" + ("---|---|" if generation else "") + "---|---|---|"]
    for i, r in enumerate(t["rows"]):
        mark = "**" if i == t["chosen"] else ""
        session = r["session"]  # ONNX Runtime's, or an OpenVINO candidate's properties (no optimization level or mode)
        optimization = session.get("graph_optimization_level", f"OpenVINO {session.get('inference_precision_hint', '')}")
        cells = f" {fmt(r.get('ttft_p90_ms'), 'ms')} | {mark}{fmt(r.get('generation_ms'), 'ms')}{mark} |" if generation else ""
        lines.append(f"| {mark}{i + 1}{mark} | {r['variant']} | {r['threads']} | {optimization} | "
                     f"{session.get('execution_mode', '-')} | {fmt(r['p50_ms'], 'ms')} | {mark}{fmt(r['p90_ms'], 'ms')}{mark} |{cells} "
                     f"{fmt(r['accuracy'], '%')} | {fmt(r['size_mb'], 'MB')} | {cell('; '.join(r['problems']) or 'all hold')} |")
    made = [f"{name}: {how}" for name, how in t.get("variants", {}).items()] + list(t.get("left_out", []))
    return lines + ["", f"How: {cell(t['how'])} (fp32 reference accuracy {fmt(t['fp32_accuracy'], '%')}).", "",
                    *([f"Model variants: {cell('; '.join(made))}.", ""] if made else []), *tuning_cost(t)]
