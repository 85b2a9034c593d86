"""Engine tuning's measurement (worker side): every candidate session timed in interleaved rounds, the
candidates' order shuffled each round with a fixed seed, so that drift on a shared host hits all alike.

Candidates of one runtime share the worker process; each other runtime's candidates live in a child
process of their own (edgekd.perf.runtime_group), timed by command in the same shuffled order. In one
process, OpenVINO's CPU plugin and ONNX Runtime's thread pools slow each other down: on a 2-core AVX-512
VNNI host NNCF's INT8 MobileNetV2 ran at p50 4.3 ms beside three ONNX Runtime sessions and 2.1 ms alone
(ONNX Runtime's 2-thread fp32 session 6.5 vs 3.9 ms), with or without a pause before each block, while
ONNX Runtime sessions beside each other kept their own times (benchmarks/results/peers_real_findings.md).
"""
from __future__ import annotations

import random
from typing import Any, Callable

from edgekd.backends.runners import ONNXRUNTIME
from edgekd.perf.runtime_group import ChildGroup, LocalGroup, first_rows

SEED = 0  # candidate order per round is shuffled with a fixed seed


def _groups(candidates: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Candidate indices per runtime, in request order; ONNX Runtime's first when present."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(candidates):
        groups.setdefault(c.get("runtime", ONNXRUNTIME), []).append(i)
    return dict(sorted(groups.items(), key=lambda item: item[0] != ONNXRUNTIME))


def _rounds(where: dict[int, tuple[Any, int]], rounds: int, runs: int, progress: Callable[[str], None],
            label: str) -> list[list[float]]:
    """`rounds` interleaved rounds of `runs` timed runs of every candidate (order shuffled per round)."""
    samples: list[list[float]] = [[] for _ in where]
    order = sorted(where)
    rng = random.Random(SEED)
    for r in range(rounds):
        progress(f"{label} {r + 1}/{rounds}")
        rng.shuffle(order)
        for i in order:
            group, k = where[i]
            samples[i] += group.time(k, runs)
    return samples


def measure_candidates(request: dict[str, Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Worker side (edgekd.perf.measure): open every candidate's runner (its "runtime": ONNX Runtime, the
    default, or OpenVINO; edgekd.backends.runners), the first runtime's here and each other's in a child
    process, then time them in interleaved rounds on the first sample of the request's feeds. Returns
    the samples (ms, batch 1) per candidate, in request order. Each entry of request["then"] ({"feeds",
    "rounds", "runs_per_round", "warmup_runs"}: a decoder's prompt pass after its decode step) is timed
    next on the same open runners, its samples in "then_samples_ms"."""
    candidates, warmup = request["candidates"], request["warmup_runs"]
    where: dict[int, tuple[Any, int]] = {}
    groups: list[Any] = []
    try:
        for n, indices in enumerate(_groups(candidates).values()):
            members = [candidates[i] for i in indices]
            group = (LocalGroup(members, first_rows(request["feeds"]), warmup) if n == 0
                     else ChildGroup(members, request["feeds"], warmup))
            groups.append(group)
            where.update({i: (group, k) for k, i in enumerate(indices)})
        samples = _rounds(where, request["rounds"], request["runs_per_round"], progress, "tuning round")
        then = []
        for k, phase in enumerate(request.get("then", []), start=2):
            for group in groups:
                group.use(phase["feeds"], phase["warmup_runs"])
            then.append(_rounds(where, phase["rounds"], phase["runs_per_round"], progress, f"tuning round (feed {k})"))
    finally:
        for group in groups:
            group.close()
    return {"samples_ms": samples, "processes": len(groups), **({"then_samples_ms": then} if then else {})}
