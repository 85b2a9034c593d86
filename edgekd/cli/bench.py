"""Terminal output of `edgekd bench`: a progress bar over the measurement's phases (on stderr) and
the summary lines."""
from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import click


class ProgressBar:
    """click's progress bar, created at the first step (when the number of phases is known) and
    filled at exit (Offline may stop early, when throughput stops growing)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def step(self, label: str, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label="measuring", file=sys.stderr,
                                          item_show_func=lambda item: item, show_pos=True)
            self._bar.__enter__()
        else:
            self._bar.update(1)
        self._bar.current_item = label
        self._bar.render_progress()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            if kind is None:
                self._bar.update(self._bar.length - self._bar.pos)
                self._bar.current_item = "done"
            self._bar.__exit__(kind, exc, tb)


def decoder_lines(result: dict[str, Any]) -> list[str]:
    """TimeToFirstToken and DecodeTokensPerSecond of a decoder model (nothing for other models)."""
    lines = []
    ttft, decode = result.get("ttft"), result.get("decode")
    if ttft:
        lines.append(f"  TTFT          p50 {ttft['p50_ms']:.4f} ms  p90 {ttft['p90_ms']:.4f} ms  ({ttft['prompt_tokens']}-token prompt, "
                     f"{ttft['runs']} runs)" if ttft["method"] == "measured" else f"  TTFT          not available: {ttft['how']}")
    if decode:
        if decode["method"] == "measured":
            tok = decode["per_token"]
            lines.append(f"  Decode        {decode['tokens_per_s']:,.1f} tokens/s  per token p50 {tok['p50_ms']:.4f} ms  "
                         f"p90 {tok['p90_ms']:.4f} ms  ({decode['new_tokens']} tokens x {decode['generations']} generations"
                         + (")" if decode["kv_cache"] else "; no KV cache in the graph: each token re-runs the whole sequence)"))
        else:
            lines.append(f"  Decode        not available: {decode['how']}")
        genai = decode.get("onnxruntime_genai")
        if genai and genai["method"] == "measured":
            tok = genai["per_token"]
            lines.append(f"  Decode/genai  {genai['tokens_per_s']:,.1f} tokens/s  per token p50 {tok['p50_ms']:.4f} ms  p90 {tok['p90_ms']:.4f} ms  "
                         f"(onnxruntime-genai on the engine's folder, shared KV buffers {'on' if genai['shared_buffers'] else 'off'}; "
                         f"{'same tokens as' if genai['same_tokens_as_loop'] else 'TOKENS DIFFER from'} edgekd's loop)")
    return lines


def bench_summary(path: Path, result: dict[str, Any]) -> str:
    if "latency" in result and "source" in result:  # a device result (edgekd bench --device)
        lat = result["latency"]
        return (f"{path} on {result['source']}: p50 {lat['p50_ms']:.4f} ms  p90 {lat['p90_ms']:.4f} ms  "
                f"p99 {lat['p99_ms']:.4f} ms  ({lat['runs']} runs)")
    if result["method"] == "estimated":
        return f"{path} on {result['target']}: p90 {result['p90_ms']:.4f} ms, {result['where']}"
    lines = [f"{path} on {result['target']}, measured: {result['where']}",
             f"  SingleStream  p50 {result['p50_ms']:.4f} ms  p90 {result['p90_ms']:.4f} ms  p99 {result['p99_ms']:.4f} ms  "
             f"mean {result['mean_ms']:.4f} ms  min {result['min_ms']:.4f}  max {result['max_ms']:.4f}  CV {result['cv']:.2f}  "
             f"({result['runs']} runs, {result['intra_op_threads']} threads)"]
    offline = result.get("scenarios", {}).get("Offline")
    if offline:
        lines.append(f"  Offline       {offline['throughput_per_s']:,.0f} samples/s at batch {offline['best_batch']} "
                     f"(tried {', '.join(str(b['batch']) for b in offline['batches'])})")
    lines += decoder_lines(result)
    if result.get("top_ops"):
        lines.append("  top ops       " + ", ".join(f"{op['op_type']} {op['pct']:.0f}%" for op in result["top_ops"][:5]))
    peak = result.get("peak_rss_mb")
    lines.append(f"  memory        peak RSS {peak:.1f} MiB (whole bench process)" if peak is not None else "  memory        n/a")
    return "\n".join(lines)
