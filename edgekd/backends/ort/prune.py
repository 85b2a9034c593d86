"""Engine tuning's cost: rule candidates out before paying for their full timing.

Between building the model variants and timing them, the tuner (edgekd.backends.ort.tune) hands every
(variant, session settings) candidate here, with the budget problems already known before any timing
(the judged accuracy or perplexity, the file size). Three cuts, in order, each recorded with why:

1. accuracy: a candidate that breaks the task metric's quantize budget is not timed at all (the
   chooser would only take it when nothing holds that budget, so nothing is cut in that case);
2. estimate: each ONNX Runtime variant is costed by edgekd's latency model (edgekd.analysis.estimate
   with the target's [device] figures); a variant estimated more than `estimate_factor` times slower
   than the best estimate is dropped. The factor carries the safety margin: on the calibrated AVX2
   host the estimate was within 0.66-1.40x of the measurement (benchmarks/results/estimate_vs_measured.md),
   so two estimates may disagree with each other by ~2x; the default 3.0 sits above that;
3. screening: one short round (`screen_runs` per candidate, after the warm-up) of everything left;
   the full interleaved rounds then time only the candidates within `screen_factor` of the best
   screened p90, plus the fastest screened candidate with no known budget problem and the fastest
   fp32 one (the baseline). A decoder (timed on its decode step) is screened on its generation time
   instead: two prompt passes each, + recipe.bench.decode_tokens x the decode step's p90; it gets no
   estimate cut (the latency model costs the full-sequence forward, not those two). Its prompt passes
   are timed in the same worker run as its decode steps, on the same open sessions (screening and
   full rounds alike): opening a 135 M decoder's session costs more than its screening runs.

fp32 (the baseline) is never cut by 1 or 2, nor the only variant holding the metric budget. Every cut
candidate stays in the record ("pruned") with the stage that cut it and the number it was cut on.
Times: what each candidate's timing took (the sum of its timed runs, screening and full, measured
with the runs) and the wall time of each worker; tune.py adds build and judge times.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgekd.config.models import TuneConfig
    from edgekd.pipeline.context import EngineContext as Context

ACCURACY, ESTIMATE, SCREENING = "accuracy", "estimate", "screening"


@dataclass(frozen=True)
class Candidate:
    """One (variant, settings) pair: `variant` has .name, .precision, .model (and .runtime where
    there are several); `entry` is the timing worker's request entry; `label` names it in the record
    (variant, runtime, session, threads); `problems`: budget problems known before timing."""

    variant: Any
    entry: dict[str, Any]
    label: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    @property
    def is_fp32(self) -> bool:
        return self.variant.precision == "fp32"


@dataclass
class Measured:
    """What `measure` timed in full (`timed`: indices into the candidates, `samples`: their full-round
    samples), what it cut and why, and what each step cost."""

    timed: list[int]
    samples: list[list[float]]
    pruned: list[dict[str, Any]] = field(default_factory=list)
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing_s: dict[int, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    screened_median_ms: dict[int, float] = field(default_factory=dict)
    runs_per_round: int = 0  # of the full rounds
    prompt_samples: list[list[float]] = field(default_factory=list)  # a decoder's prompt passes in the full rounds, as `samples`

    def record(self, clock: Clock, variants: list[Any]) -> dict[str, Any]:
        """The tuning record's additions: "pruned" (every cut candidate, with its stage and why),
        "estimates" (per variant), "pruning" (notes) and "times": the tuner's steps in seconds
        (`clock`'s laps and this module's), and "build_s" per variant (None: made by an earlier stage, or given)."""
        times = {**clock.seconds, **self.seconds, "build_s": {v.name: getattr(v, "build_s", None) for v in variants},
                 "how": TIMES_HOW}
        return {"pruned": self.pruned, "estimates": self.estimates, "pruning": self.notes, "times": times}

    def describe(self, total: int) -> str:
        """One phrase for the record's "how": how many were timed in full and what cut the others."""
        stages = {st: sum(p["stage"] == st for p in self.pruned) for st in (ACCURACY, ESTIMATE, SCREENING)}
        cut = ", ".join(f"{n} by {st}" for st, n in stages.items() if n)
        return f"{len(self.timed)} of {total} timed in full" + (f" ({cut}: see 'pruned')" if cut else "")


TIMES_HOW = ("wall-clock seconds (time.perf_counter in the build process): variants_s making the model variants, judge_s "
             "judging their quality, estimate_s the latency estimates, screening_s / full_s each timing worker from start "
             "to exit (sessions opened, warm-up and timed runs); a candidate's timing_s is the sum of its own timed runs")


class Clock:
    """Wall-clock laps: lap(name) records the seconds since the previous lap (or since it was made)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now


def candidates(pairs: list[tuple[Any, Any]], known: Callable[[Any, Any], list[str]]) -> list[Candidate]:
    """The tuner's (variant, settings) pairs as Candidates; `known(variant, settings)`: the budget
    problems known before timing."""
    from edgekd.backends.runners import threads

    return [Candidate(v, {"model": str(v.model), "session": s.model_dump(), "runtime": v.runtime},
                      {"variant": v.name, "runtime": v.runtime, "precision": v.precision, "quant_format": v.quant_format,
                       "model": Path(v.model).name, "session": s.model_dump(), "threads": threads(s)}, known(v, s))
            for v, s in pairs]


def _metric_breaks(c: Candidate, metric: str) -> bool:
    return any(p.startswith(metric) for p in c.problems)


def _cut(m: Measured, cands: list[Candidate], i: int, stage: str, why: str, **numbers: Any) -> None:
    m.pruned.append({**cands[i].label, "stage": stage, "why": why, "problems": cands[i].problems, **numbers,
                     **({"timing_s": m.timing_s[i]} if i in m.timing_s else {})})


def cut_on_accuracy(cands: list[Candidate], alive: list[int], metric: str, m: Measured) -> list[int]:
    """Drop the candidates that break the `metric` budget, unless none would be left holding it."""
    holding = [i for i in alive if not _metric_breaks(cands[i], metric) or cands[i].is_fp32]
    if not holding:
        m.notes.append(f"every candidate breaks the {metric} budget: none cut on it, all timed")
        return alive
    for i in alive:
        if i not in holding:
            _cut(m, cands, i, ACCURACY, f"not timed: breaks the {metric} budget before any timing ("
                 + "; ".join(p for p in cands[i].problems if p.startswith(metric)) + ")")
    return holding


def estimate_ms(ctx: Context, variant: Any) -> tuple[float | None, str]:
    """edgekd's latency estimate of `variant` on the target's [device] figures, or None and why not."""
    from edgekd.analysis.estimate import estimate

    device = ctx.target.device
    if getattr(variant, "runtime", "onnxruntime") != "onnxruntime":
        return None, f"not estimated: the latency model costs ONNX Runtime's graph, not {variant.runtime}'s"
    if device is None or variant.precision not in device.precisions:
        return None, f"not estimated: the target's [device] has no {variant.precision} peak"
    try:
        result = estimate(Path(variant.model), device, precision=variant.precision, inputs=ctx.model_inputs)
    except Exception as exc:  # noqa: BLE001 - an estimate that fails is recorded as not available and the variant timed
        return None, f"not estimated ({type(exc).__name__}): {str(exc).splitlines()[0] if str(exc) else 'no message'}"
    return result.latency_ms, f"estimated by edgekd.analysis.estimate on {ctx.target_file.name}'s [device] figures at batch 1"


def cut_on_estimate(ctx: Context, cands: list[Candidate], alive: list[int], cfg: TuneConfig, m: Measured) -> list[int]:
    """Drop the variants estimated more than cfg.estimate_factor times slower than the best estimate
    (never fp32, never the only variant left holding the metric budget)."""
    start = time.perf_counter()
    variants = {cands[i].variant.name: cands[i].variant for i in alive}
    for name, v in variants.items():
        ms, how = estimate_ms(ctx, v)
        m.estimates[name] = {"latency_ms": ms, "method": "estimated" if ms is not None else "not available", "how": how}
    m.seconds["estimate_s"] = time.perf_counter() - start
    known = {n: e["latency_ms"] for n, e in m.estimates.items() if e["latency_ms"] is not None}
    if len(known) < 2:
        m.notes.append("estimate cut: fewer than two variants could be estimated, none cut")
        return alive
    best = min(known.values())
    slow = {n for n, ms in known.items() if ms > cfg.estimate_factor * best and variants[n].precision != "fp32"}
    holding = {cands[i].variant.name for i in alive if not _metric_breaks(cands[i], ctx.metric.name)}
    if holding and holding <= slow:
        slow -= holding  # never drop every variant that holds the metric budget
    for i in alive:
        name = cands[i].variant.name
        if name in slow:
            _cut(m, cands, i, ESTIMATE, f"estimated {known[name]:.4g} ms > {cfg.estimate_factor:g} x the best estimate "
                 f"({best:.4g} ms): not timed", estimate_ms=known[name])
    return [i for i in alive if cands[i].variant.name not in slow]


Phase = tuple[dict[str, np.ndarray], tuple[int, int, int]]  # a feed and its (rounds, runs per round, warm-up runs)


def run_phases(entries: list[dict[str, Any]], phases: list[Phase], out: Path, what: str,
               notes: list[str] | None = None) -> tuple[list[list[list[float]]], float]:
    """Time the worker `entries` in the timing worker (edgekd.perf.interleaved) on each phase's feed in
    turn, with its (rounds, runs per round, warm-up runs), every session opened once for all phases;
    returns the samples per phase per entry and the worker's wall seconds. Entries whose sessions
    would not fit in memory together are timed in batches that do (edgekd.perf.memory_batches), one
    worker run each; a note in `notes` says so."""
    from edgekd.perf.measure import run_worker
    from edgekd.perf.memory_batches import memory_batches

    (feed, (rounds, runs, warmup)), later = phases[0], phases[1:]
    samples: list[list[list[float]]] = [[[] for _ in entries] for _ in phases]
    batches, files = memory_batches(entries), [out / f"tune_feeds_{k}.npz" for k in range(1, len(phases))]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for path, (arrays, _) in zip(files, later):
            np.savez(path, **arrays)
        then = [{"feeds": str(path), "rounds": r, "runs_per_round": n, "warmup_runs": w} for path, (_, (r, n, w)) in zip(files, later)]
        for batch in batches:
            request = {"mode": "tune", "rounds": rounds, "runs_per_round": runs, "warmup_runs": warmup,
                       "candidates": [entries[i] for i in batch], **({"then": then} if then else {})}
            result = run_worker(request, feed, out, what)
            for k, got in enumerate([result["samples_ms"], *result.get("then_samples_ms", [])]):
                for i, one in zip(batch, got):
                    samples[k][i] = one
    finally:
        for path in files:
            path.unlink(missing_ok=True)
    if len(batches) > 1 and notes is not None:
        notes.append(f"{what}: {len(entries)} candidates timed in {len(batches)} batches of {', '.join(str(len(b)) for b in batches)} "
                     "(their sessions together would not fit in memory: edgekd.perf.memory_batches); rounds interleave within a batch")
    return samples, time.perf_counter() - start


def run_rounds(entries: list[dict[str, Any]], schedule: tuple[int, int, int], feed: dict[str, np.ndarray], out: Path,
               what: str, notes: list[str] | None = None) -> tuple[list[list[float]], float]:
    """run_phases with one phase: the samples per entry and the worker's wall seconds."""
    samples, wall = run_phases(entries, [(feed, schedule)], out, what, notes)
    return samples[0], wall


@dataclass(frozen=True)
class Prompt:
    """A decoder's prompt pass, timed beside its decode step on the same sessions: candidates rank by
    generation time, the prompt pass's p90 + `tokens` x the decode step's p90 (`feed`: the prompt
    pass's feed; `runs`: its timed runs per full round)."""

    feed: dict[str, np.ndarray]
    tokens: int
    runs: int = 1


def _screen_scores(alive: list[int], p90: dict[int, float], prompt: Prompt | None,
                   prompt_samples: list[list[float]]) -> tuple[dict[int, float], str]:
    """What screening compares: the decode step's (or only input's) p90, or with a `prompt` the
    generation time from a short look at each candidate's prompt pass too; and its name."""
    if prompt is None:
        return p90, "p90"
    return ({i: float(np.max(s)) + prompt.tokens * p90[i] for i, s in zip(alive, prompt_samples)},
            f"generation (the slower of 2 prompt passes + {prompt.tokens} x the decode step's p90)")


def screen(cands: list[Candidate], alive: list[int], cfg: TuneConfig, feed: dict[str, np.ndarray], out: Path,
           m: Measured, prompt: Prompt | None = None) -> list[int]:
    """One short round of every candidate left (a decoder's: its decode step, then 2 prompt passes on
    the same sessions); the promising ones go on to the full rounds."""
    warmup = min(cfg.warmup_runs, max(1, cfg.screen_runs // 4))  # a short look: the full rounds warm up again
    phases: list[Phase] = [(feed, (1, cfg.screen_runs, warmup)), *([(prompt.feed, (1, 2, 1))] if prompt else [])]
    per_phase, wall = run_phases([cands[i].entry for i in alive], phases, out, "engine tuning (screening)", m.notes)
    m.seconds["screening_s"], samples = wall, per_phase[0]
    p90 = {i: float(np.percentile(s, 90)) for i, s in zip(alive, samples)}
    for i, s in zip(alive, samples):
        m.timing_s[i], m.screened_median_ms[i] = {"screening": float(sum(s)) / 1e3}, float(np.median(s))
    p90, what = _screen_scores(alive, p90, prompt, per_phase[-1])
    best = min(p90.values())
    full_s = sum(m.screened_median_ms.values()) * cfg.rounds * cfg.runs_per_round / 1e3
    if full_s <= cfg.screen_min_full_s:
        m.notes.append(f"screening cut nothing: timing all {len(alive)} in full takes ~{full_s:.3g} s at their screened medians "
                       f"(<= screen_min_full_s {cfg.screen_min_full_s:g})")
        return alive
    keep = {i for i in alive if p90[i] <= cfg.screen_factor * best}
    for group in ([i for i in alive if not cands[i].problems], [i for i in alive if cands[i].is_fp32]):
        if group:
            keep.add(min(group, key=p90.__getitem__))  # the fastest without known problems; the fp32 baseline
    for i in alive:
        if i not in keep:
            _cut(m, cands, i, SCREENING, f"screened {what} {p90[i]:.4g} ms > {cfg.screen_factor:g} x the best screened "
                 f"{what.split(' ')[0]} ({best:.4g} ms, {cfg.screen_runs} runs each after {warmup} warm-up runs)", screen_p90_ms=p90[i])
    return [i for i in alive if i in keep]


def full_runs_per_round(cfg: TuneConfig, screened_ms: list[float], m: Measured) -> int:
    """cfg.runs_per_round, or fewer (not under cfg.min_runs_per_round) so that each candidate's full
    rounds take about cfg.full_seconds_per_candidate at the slowest screened median (one count for
    all: the rounds stay interleaved alike). Unscreened: cfg.runs_per_round."""
    if cfg.full_seconds_per_candidate is None or not screened_ms:
        return cfg.runs_per_round
    fit = int(cfg.full_seconds_per_candidate * 1e3 / (max(screened_ms) * cfg.rounds))
    runs = max(cfg.min_runs_per_round, min(cfg.runs_per_round, fit))
    if runs < cfg.runs_per_round:
        m.notes.append(f"full rounds: {runs} runs per round instead of {cfg.runs_per_round}, so that each candidate's "
                       f"{cfg.rounds} rounds take about {cfg.full_seconds_per_candidate:g} s at the slowest screened median "
                       f"({max(screened_ms):.4g} ms; [recipe.tune] full_seconds_per_candidate, min_runs_per_round)")
    return runs


def measure(ctx: Context, cands: list[Candidate], feed: dict[str, np.ndarray], out: Path, prompt: Prompt | None = None) -> Measured:
    """Cut what can be ruled out (see the module docstring), then time the rest in the profile's
    interleaved rounds. With [recipe.tune] prune = false every candidate gets the full rounds.
    `prompt` (a decoder): no estimate cut, and screening compares generation times."""
    cfg = ctx.profile.recipe.tune
    alive = list(range(len(cands)))
    m = Measured([], [])
    if cfg.prune:
        alive = cut_on_accuracy(cands, alive, ctx.metric.name, m)
        if prompt is None:
            alive = cut_on_estimate(ctx, cands, alive, cfg, m)
        else:
            m.notes.append("no estimate cut for a decoder: the latency model costs the full-sequence forward at the default "
                           "shapes, not the decode step and prompt pass timed here (and has no int4 peak)")
        if cfg.screen_runs and len(alive) > 1:
            alive = screen(cands, alive, cfg, feed, out, m, prompt)
    else:
        m.notes.append("pruning off ([recipe.tune] prune = false): every candidate timed in full")
    m.runs_per_round = full_runs_per_round(cfg, [m.screened_median_ms[i] for i in alive if i in m.screened_median_ms], m)
    phases: list[Phase] = [(feed, (cfg.rounds, m.runs_per_round, cfg.warmup_runs)),
                           *([(prompt.feed, (cfg.rounds, prompt.runs, 1))] if prompt else [])]
    per_phase, wall = run_phases([cands[i].entry for i in alive], phases, out, "engine tuning", m.notes)
    m.seconds["full_s"] = wall
    for i, s in zip(alive, per_phase[0]):
        m.timing_s.setdefault(i, {})["full"] = float(sum(s)) / 1e3
    m.timed, m.samples = alive, per_phase[0]
    m.prompt_samples = per_phase[1] if prompt else []
    return m
