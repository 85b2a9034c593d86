"""Decoder student search ([student.search] family = "decoder"): before any training, pick the
largest student derived from the teacher's Hugging Face config that meets the decode tokens/s,
time-to-first-token and peak-memory budgets on the target.

Candidates are the teacher's config scaled: width w keeps the head size and the teacher's grouping
of query heads per key/value head (GQA) and scales the number of heads (so hidden_size and the MLP
width follow), depth d scales the layers. Each candidate is built untrained, exported with past
key/values (optimum-onnx, edgekd.tasks.export.export_hf), quantized weight-only to INT4
(MatMulNBits, edgekd.graph.weight_only: the decode step reads every weight, so this is the
engine a decoder budget is met with) and measured by the bench worker in a fresh process, as the
bench stage measures the built engine: TimeToFirstToken at the profile's prompt length, greedy
DecodeTokensPerSecond with the KV cache, and the worker's peak resident memory. Untrained weights
change none of these (the graph, the shapes and the kernels are the trained student's).

x86 targets only (the numbers are measured here); other targets are a clear ConfigError: their
decode latency would be an estimate the latency model does not make yet.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.config.models import BenchConfig
from edgekd.errors import ConfigError

FAMILY = "decoder"
MEASURE_SCENARIOS = ["TimeToFirstToken", "DecodeTokensPerSecond"]
SEARCH_RUNS = {"warmup_runs": 5, "min_runs": 10, "max_runs": 50, "max_seconds": 2.0, "ttft_runs": 10, "decode_runs": 2,
               "profile_runs": 0}


@dataclass(frozen=True)
class Budget:
    """The decoder budgets a candidate must meet (None: not checked)."""

    decode_tokens_per_s: float | None = None
    ttft_ms: float | None = None
    peak_memory_mb: float | None = None


@dataclass
class Candidate:
    width: float
    depth: float
    overrides: dict[str, Any]
    params: int = 0
    decode_tokens_per_s: float | None = None
    ttft_ms: float | None = None
    peak_memory_mb: float | None = None
    how: str = ""
    why_not: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def fits(self) -> bool:
        return not self.why_not

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "fits": self.fits}


def _field(config: Any, name: str) -> str:
    """The config's own key for a common name (GPT-2 stores hidden_size as n_embd)."""
    return getattr(config, "attribute_map", {}).get(name, name)


def scaled(config: Any, width: float, depth: float) -> dict[str, Any]:
    """Overrides of `config` (a transformers decoder config) for one candidate: heads scaled by
    `width` in whole GQA groups, the head size kept, layers scaled by `depth` (at least one)."""
    heads = getattr(config, "num_attention_heads", None)
    layers = getattr(config, "num_hidden_layers", None)
    if not heads or not layers or not getattr(config, "hidden_size", None):
        raise ConfigError(f"student search family '{FAMILY}': the teacher's {type(config).__name__} has no "
                          "num_attention_heads / num_hidden_layers / hidden_size to scale", "give the student as [student.hf] instead")
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    group = max(1, heads // kv)
    new_heads = max(group, round(heads * width / group) * group)
    hidden = new_heads * head_dim
    out = {_field(config, "num_attention_heads"): new_heads, _field(config, "hidden_size"): hidden,
           _field(config, "num_hidden_layers"): max(1, round(layers * depth))}
    if getattr(config, "num_key_value_heads", None):
        out["num_key_value_heads"] = new_heads // group
    if getattr(config, "head_dim", None):
        out["head_dim"] = head_dim
    inner = getattr(config, "intermediate_size", None)
    if inner:
        out["intermediate_size"] = max(8, round(inner * hidden / config.hidden_size / 8) * 8)
    return out


def why_not(c: Candidate, budget: Budget) -> list[str]:
    why = []
    if budget.decode_tokens_per_s is not None and (c.decode_tokens_per_s or 0.0) < budget.decode_tokens_per_s:
        why.append(f"decode {c.decode_tokens_per_s or 0:.4g} tokens/s < budget {budget.decode_tokens_per_s:g}")
    if budget.ttft_ms is not None and (c.ttft_ms is None or c.ttft_ms > budget.ttft_ms):
        why.append(f"TTFT {c.ttft_ms} ms > budget {budget.ttft_ms:g} ms")
    if budget.peak_memory_mb is not None and (c.peak_memory_mb is None or c.peak_memory_mb > budget.peak_memory_mb):
        why.append(f"peak memory {c.peak_memory_mb} MiB > budget {budget.peak_memory_mb:g} MiB")
    return why


def search_bench(bench: BenchConfig) -> BenchConfig:
    """The profile's bench settings (prompt and decode lengths) with short runs and the decoder scenarios only."""
    return bench.model_copy(update={"scenarios": MEASURE_SCENARIOS, **SEARCH_RUNS})


CostFn = Callable[[Candidate, Any, Path], None]  # fills a candidate's params and measured numbers


def search_decoder(config: Any, pairs: list[tuple[float, float]], budget: Budget, cost: CostFn, workdir: Path,
                   log: Callable[[str], None] | None = None) -> tuple[Candidate, list[Candidate]]:
    """Cost every (width, depth) candidate of `config`; (the one with the most parameters that meets
    `budget`, else the smallest, whose numbers then break the budgets at the search stage; every row)."""
    rows: list[Candidate] = []
    seen: dict[tuple[Any, ...], Candidate] = {}
    for width, depth in pairs:
        overrides = scaled(config, width, depth)
        key = tuple(sorted(overrides.items()))
        started = time.perf_counter()
        if key in seen:  # the same architecture (rounding): measured once
            first = seen[key]
            row = dataclasses.replace(first, width=width, depth=depth,
                                      how=f"same architecture as width {first.width:g}, depth {first.depth:g}: {first.how}")
        else:
            row = Candidate(width, depth, overrides)
            cost(row, config, workdir / f"w{width:g}-d{depth:g}")
            seen[key] = row
        row.why_not, row.seconds = why_not(row, budget), time.perf_counter() - started
        rows.append(row)
        if log is not None:
            log(f"  decoder width {width:g} depth {depth:g}: {row.params:,} params, {row.decode_tokens_per_s or 0:.4g} tokens/s, "
                f"TTFT {row.ttft_ms} ms, peak {row.peak_memory_mb} MiB -> {'fits' if row.fits else '; '.join(row.why_not)}")
    fitting = [r for r in rows if r.fits]
    return (max(fitting, key=lambda r: r.params) if fitting else min(rows, key=lambda r: r.params)), rows
