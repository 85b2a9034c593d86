"""Engine tuning's pruning (edgekd.backends.ort.prune): what it cuts, what it always keeps, the reasons
and times it records, and the report's tuning-cost block. The latency estimate and the timing worker
are replaced through their named seams (estimate_ms, run_phases) with given numbers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgekd.backends.ort import prune
from edgekd.config.models import TuneConfig
from edgekd.config.target import SessionConfig
from edgekd.report.markdown_perf import tuning as tuning_markdown

ACC = "accuracy 50.00% is 50.00 pt below fp32 > quantize_accuracy_drop_pt 1.0"


@dataclass(frozen=True)
class FakeVariant:
    name: str
    precision: str
    model: Path = Path("m.onnx")
    quant_format: str | None = None
    runtime: str = "onnxruntime"
    build_s: float | None = None


def _ctx(**tune: Any) -> Any:
    return SimpleNamespace(profile=SimpleNamespace(recipe=SimpleNamespace(tune=TuneConfig(**tune))),
                           metric=SimpleNamespace(name="accuracy"), target=SimpleNamespace(device=None),
                           target_file=SimpleNamespace(name="x86-test"), model_inputs=None)


def _cands(spec: list[tuple[str, str, int, list[str]]]) -> list[prune.Candidate]:
    """(variant, precision, threads, known problems) per candidate."""
    out = []
    for name, precision, threads, problems in spec:
        session = SessionConfig(intra_op_num_threads=threads)
        label = {"variant": name, "runtime": "onnxruntime", "precision": precision, "session": session.model_dump(), "threads": threads}
        out.append(prune.Candidate(FakeVariant(name, precision), {"model": name, "threads": threads}, label, problems))
    return out


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The timing worker replaced: each entry's runs take `ms[(model, threads)]`; every call is recorded."""
    calls: list[dict[str, Any]] = []
    ms = {("fp32", 1): 40.0, ("fp32", 2): 22.0, ("int8-qdq", 1): 30.0, ("int8-qdq", 2): 16.0,
          ("int8-qoperator", 1): 90.0, ("int8-qoperator", 2): 50.0, ("int8-bad", 1): 5.0, ("int8-bad", 2): 3.0}

    def fake(entries, phases, out, what, notes=None):
        ((_, (rounds, runs, _)),) = phases  # not a decoder: one feed
        calls.append({"entries": [(e["model"], e["threads"]) for e in entries], "rounds": rounds, "runs": runs})
        return [[[ms[(e["model"], e["threads"])]] * (rounds * runs) for e in entries]], 1.5

    monkeypatch.setattr(prune, "run_phases", fake)
    return calls


def _estimates(monkeypatch: pytest.MonkeyPatch, values: dict[str, float | None]) -> None:
    monkeypatch.setattr(prune, "estimate_ms", lambda ctx, v: (values[v.name], "given") if values[v.name] is not None
                        else (None, "not estimated: given"))


SPACE = [(v, p, t, []) for v, p in (("int8-qdq", "int8"), ("int8-qoperator", "int8"), ("fp32", "fp32")) for t in (1, 2)]


def test_estimate_cuts_the_far_slower_variant_but_never_fp32(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 45.0, "fp32": 100.0})
    cands = _cands(SPACE)
    m = prune.measure(_ctx(estimate_factor=3.0, screen_runs=0), cands, {}, Path("."))
    cut = {(p["variant"], p["threads"]): p for p in m.pruned}
    assert set(cut) == {("int8-qoperator", 1), ("int8-qoperator", 2)}  # 45 > 3 x 10; fp32 (100) is the baseline
    assert all(p["stage"] == "estimate" and p["estimate_ms"] == 45.0 and "3 x the best estimate" in p["why"] for p in cut.values())
    timed = {(cands[i].label["variant"], cands[i].label["threads"]) for i in m.timed}
    assert timed == {("int8-qdq", 1), ("int8-qdq", 2), ("fp32", 1), ("fp32", 2)}
    assert worker[-1]["rounds"] == 5 and worker[-1]["runs"] == 200  # the profile's full rounds for what is left
    assert m.estimates["int8-qoperator"] == {"latency_ms": 45.0, "method": "estimated", "how": "given"}


def test_estimate_keeps_the_only_variant_holding_the_accuracy_budget(monkeypatch, worker) -> None:
    # fp32 (never cut) is estimated fastest but breaks the budget here; the slow INT8 variant is the only one holding it
    _estimates(monkeypatch, {"int8-qdq": 100.0, "fp32": 10.0})
    spec = [("int8-qdq", "int8", 1, []), ("fp32", "fp32", 1, [ACC])]
    m = prune.measure(_ctx(screen_runs=0), _cands(spec), {}, Path("."))
    assert m.timed == [0, 1] and not m.pruned


def test_accuracy_breakers_are_not_timed_and_say_so(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-bad": 2.0, "fp32": 20.0})
    spec = [("int8-bad", "int8", 2, [ACC]), ("int8-qdq", "int8", 2, []), ("fp32", "fp32", 2, [])]
    m = prune.measure(_ctx(screen_runs=0), _cands(spec), {}, Path("."))
    assert m.timed == [1, 2] and all(("int8-bad", 2) not in c["entries"] for c in worker)
    (cut,) = m.pruned
    assert cut["stage"] == "accuracy" and cut["why"].startswith("not timed: breaks the accuracy budget") and ACC in cut["why"]
    assert "1 by accuracy" in m.describe(3)


def test_when_everything_breaks_accuracy_nothing_is_cut_on_it(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-bad": 10.0})
    spec = [("int8-bad", "int8", 2, [ACC]), ("int8-qdq", "int8", 2, [ACC])]
    m = prune.measure(_ctx(screen_runs=0), _cands(spec), {}, Path("."))
    assert m.timed == [0, 1] and not m.pruned and "none cut on it" in m.notes[0]


def test_screening_keeps_the_best_and_the_fp32_baseline(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 12.0, "fp32": 15.0})  # nothing cut on estimates
    cands = _cands(SPACE)
    m = prune.measure(_ctx(screen_runs=10, screen_factor=1.5), cands, {}, Path("."))
    screening, full = worker
    assert screening["rounds"] == 1 and screening["runs"] == 10 and len(screening["entries"]) == 6
    # best screened p90: int8-qdq at 2 threads, 16 ms; within 1.5x: only it (int8-qdq at 1 thread is 30 ms);
    # the fastest fp32 (22 ms, 2 threads) goes on as the baseline
    assert set(full["entries"]) == {("int8-qdq", 2), ("fp32", 2)}
    by_key = {(p["variant"], p["threads"]): p for p in m.pruned}
    assert set(by_key) == {("int8-qdq", 1), ("int8-qoperator", 1), ("int8-qoperator", 2), ("fp32", 1)}
    assert by_key[("int8-qoperator", 2)]["screen_p90_ms"] == 50.0 and "1.5 x the best screened p90" in by_key[("int8-qoperator", 2)]["why"]
    assert all(p["stage"] == "screening" and p["timing_s"]["screening"] > 0 for p in m.pruned)
    for i in m.timed:  # screened and fully timed: both times, from the runs themselves
        runs_ms = {("int8-qdq", 2): 16.0, ("fp32", 2): 22.0}[(cands[i].label["variant"], cands[i].label["threads"])]
        assert m.timing_s[i] == pytest.approx({"screening": 10 * runs_ms / 1e3, "full": 5 * full["runs"] * runs_ms / 1e3})
    assert m.seconds["screening_s"] == 1.5 and m.seconds["full_s"] == 1.5


def test_screening_keeps_the_fastest_without_known_problems(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 12.0, "fp32": 15.0})
    size = "size 47.000 MB > size_mb 20.0"
    spec = [("int8-qdq", "int8", 2, [size]), ("int8-qoperator", "int8", 2, []), ("fp32", "fp32", 2, [size])]
    prune.measure(_ctx(screen_runs=10), _cands(spec), {}, Path("."))
    assert ("int8-qoperator", 2) in worker[-1]["entries"]  # 50 ms, 3x the best, but the only one meeting every budget


def test_pruning_off_times_everything_in_full(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 1.0, "int8-qoperator": 100.0, "fp32": 100.0})
    m = prune.measure(_ctx(prune=False), _cands(SPACE), {}, Path("."))
    assert len(worker) == 1 and len(worker[0]["entries"]) == 6 and m.timed == list(range(6)) and not m.pruned
    assert "pruning off" in m.notes[0]


def test_times_are_in_the_record_and_the_report(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 45.0, "fp32": 20.0})
    cands = _cands(SPACE)
    m = prune.measure(_ctx(screen_runs=10), cands, {}, Path("."))
    clock = prune.Clock()
    clock.lap("variants_s")
    clock.lap("judge_s")
    variants = [FakeVariant("int8-qdq", "int8"), FakeVariant("int8-qoperator", "int8", build_s=3.25), FakeVariant("fp32", "fp32")]
    record = m.record(clock, variants)
    times = record["times"]
    assert {"variants_s", "judge_s", "estimate_s", "screening_s", "full_s"} <= set(times) and "perf_counter" in times["how"]
    assert times["build_s"] == {"int8-qdq": None, "int8-qoperator": 3.25, "fp32": None}
    rows = [{**cands[i].label, "accuracy": 100.0, "size_mb": 1.0, "p50_ms": 1.0, "p90_ms": 1.0, "problems": [],
             "timing_s": m.timing_s[i]} for i in m.timed]
    t = {"chosen": 0, "reason": "fastest", "rows": rows, "how": "h", "fp32_accuracy": 100.0, **record}
    md = "\n".join(tuning_markdown(t))
    assert "### Tuning cost" in md and "int8-qoperator 3.25 s" in md
    assert md.count("| timed in full |") == len(rows) and md.count("cut: estimate") == 2 and "cut: screening" in md
    assert "Latency estimates per variant: int8-qdq " in md
    from edgekd.report.markdown_tuning_cost import HEAD, view

    v = view(t)  # the one text view report.md and report.html both render
    assert len(v["rows"]) == len(rows) + len(m.pruned) and all(len(r) == len(HEAD) for r in v["rows"])
    import json

    import jsonschema

    from edgekd.report.build_report import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    rows_ok = [{**r, "size_mb": 1.0, "p50_ms": 1.0, "runs": 10} for r in rows]
    jsonschema.validate({**t, "rows": rows_ok}, {**schema["$defs"]["tuning"], "$defs": schema["$defs"]})


def test_full_rounds_are_cut_to_the_time_per_candidate_and_say_so(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 12.0, "fp32": 15.0})
    m = prune.measure(_ctx(screen_runs=10, full_seconds_per_candidate=8.0, min_runs_per_round=20), _cands(SPACE), {}, Path("."))
    # survivors: int8-qdq at 2 threads (16 ms) and fp32 at 2 threads (22 ms): 8 s / (22 ms x 5 rounds) = 72 runs per round
    assert worker[-1]["runs"] == 72 == m.runs_per_round and any("72 runs per round instead of 200" in n for n in m.notes)
    slow = prune.measure(_ctx(screen_runs=10, full_seconds_per_candidate=0.1, min_runs_per_round=20), _cands(SPACE), {}, Path("."))
    assert slow.runs_per_round == 20  # never below the floor
    uncapped = prune.measure(_ctx(screen_runs=10, full_seconds_per_candidate=None), _cands(SPACE), {}, Path("."))
    assert uncapped.runs_per_round == 200


def test_screening_cuts_nothing_when_timing_everything_is_cheap(monkeypatch, worker) -> None:
    _estimates(monkeypatch, {"int8-qdq": 10.0, "int8-qoperator": 12.0, "fp32": 15.0})
    m = prune.measure(_ctx(screen_runs=10, screen_min_full_s=1000.0), _cands(SPACE), {}, Path("."))
    assert len(worker) == 2 and len(worker[-1]["entries"]) == 6 and not m.pruned  # screened, then all timed in full
    assert any(n.startswith("screening cut nothing: timing all 6 in full takes ~248 s") for n in m.notes)


def test_estimate_ms_costs_onnxruntime_variants_and_says_why_not_otherwise(tmp_path: Path) -> None:
    """The real estimator on a small Gemm net with the AVX2 target's [device] figures."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.config.loading import builtin_dir, load_model
    from edgekd.config.target import Target

    w = numpy_helper.from_array(np.ones((64, 32), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    model = tmp_path / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(model))
    target, _ = load_model(builtin_dir("targets") / "x86-avx2.toml", Target, "target")
    ctx = SimpleNamespace(target=target, target_file=SimpleNamespace(name="x86-avx2"), model_inputs=None)
    ms, how = prune.estimate_ms(ctx, FakeVariant("fp32", "fp32", model))
    assert ms is not None and ms > 0 and "x86-avx2's [device]" in how
    ms, how = prune.estimate_ms(ctx, FakeVariant("int4-weight-only-b32", "int4", model))
    assert ms is None and "no int4 peak" in how
    ms, how = prune.estimate_ms(ctx, FakeVariant("openvino-fp32", "fp32", model, runtime="openvino"))
    assert ms is None and "not openvino's" in how


def test_a_decoder_is_screened_on_its_generation_not_its_decode_step(monkeypatch) -> None:
    """Decode step: INT4 5 ms, dynamic INT8 7 ms, fp32 25 ms; prompt pass: 230, 118, 235 ms. For a
    prompt then 32 tokens INT8 (342 ms) beats INT4 (390 ms): screening at 1.1x keeps INT8 (and the
    fp32 baseline) and cuts INT4, the fastest decode step; the latency model (full-sequence costs) cuts nothing."""
    step = {"int4": 5.0, "int8-dyn": 7.0, "fp32": 25.0}
    ttft = {"int4": 230.0, "int8-dyn": 118.0, "fp32": 235.0}
    prompt_feed: dict[str, Any] = {"prompt": True}

    calls = []

    def fake(entries, phases, out, what, notes=None):  # one worker run: the decode step, then the prompt pass
        calls.append([(rounds, runs) for _, (rounds, runs, _) in phases])
        assert [feed for feed, _ in phases] == [{"step": True}, prompt_feed]
        return [[[(ttft if feed is prompt_feed else step)[e["model"]]] * (rounds * runs) for e in entries]
                for feed, (rounds, runs, _) in phases], 1.0

    def no_estimate(ctx, v):
        raise AssertionError("a decoder is not cut on the full-sequence estimate")
    monkeypatch.setattr(prune, "run_phases", fake)
    monkeypatch.setattr(prune, "estimate_ms", no_estimate)
    cands = _cands([("int4", "int4", 2, []), ("int8-dyn", "int8", 2, []), ("fp32", "fp32", 2, [])])
    ctx = _ctx(screen_runs=10, screen_factor=1.1, screen_min_full_s=0)
    m = prune.measure(ctx, cands, {"step": True}, Path("."), prune.Prompt(prompt_feed, 32, runs=4))
    assert m.timed == [1, 2] and m.prompt_samples == [[118.0] * 20, [235.0] * 20]  # 5 rounds of 4, on the full rounds' sessions
    assert calls == [[(1, 10), (1, 2)], [(5, m.runs_per_round), (5, 4)]]  # screening, then the full rounds: each one worker run
    (cut,) = m.pruned
    assert cut["variant"] == "int4" and cut["screen_p90_ms"] == pytest.approx(230.0 + 32 * 5.0)
    assert "generation" in cut["why"] and "1.1 x the best screened generation (342 ms" in cut["why"]
    assert any("no estimate cut for a decoder" in n for n in m.notes) and m.seconds["screening_s"] == 1.0
