"""Timing requests whose candidates do not fit in memory together, cut into batches that do.

The timing worker opens every candidate's session before its interleaved rounds. For a decoder of
135 M parameters that is 0.35-0.9 GB per session, and a tuner's variants x session settings can reach
50 sessions: the worker was killed for memory (exit -9) on a 24 GB host. Candidates are therefore
grouped in request order into batches whose estimated memory (the model's files x SESSION_FACTOR)
stays under a share of the memory available now; each batch is its own worker run, interleaved
within itself only (the caller says so where it matters).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# ONNX Runtime CPU session / model file size, measured (135 M Llama, 2026-12-07): dynamic INT8 1.24x,
# INT4 MatMulNBits 1.46x, fp32 1.22x, the prompt/decode split graph (edgekd.graph.phase_split) 1.59x
# (2.46x while its If branches held their own weights); with room to spare.
SESSION_FACTOR = 2.0
SHARE = 0.6  # of MemAvailable: the worker's own arrays, the feeds and the other processes keep the rest


def model_bytes(model: Path) -> int:
    """The bytes a model's files hold: the file, an OpenVINO IR's .bin, external-data files beside it."""
    model = Path(model)
    files = [model, model.with_suffix(".bin")] if model.suffix == ".xml" else [model, *model.parent.glob(f"{model.name}.data")]
    return sum(f.stat().st_size for f in files if f.is_file())


def available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def memory_batches(entries: list[dict[str, Any]], budget: int | None = None) -> list[list[int]]:
    """Indices of `entries` (each with a "model" path) in request order, grouped so that each group's
    estimated session memory stays under `budget` (default SHARE x MemAvailable; one group where that is
    unknown). A candidate larger than the budget alone gets a group of its own."""
    if budget is None:
        available = available_bytes()
        if available is None:
            return [list(range(len(entries)))]
        budget = int(SHARE * available)
    groups: list[list[int]] = [[]]
    used = 0
    for i, entry in enumerate(entries):
        need = int(SESSION_FACTOR * model_bytes(entry["model"]))
        if groups[-1] and used + need > budget:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    return groups
