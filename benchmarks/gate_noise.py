"""Does `edgekd gate` pass on noise and fail on a real slowdown, on this machine?

Builds the built-in example once (x86, ci profile, a temporary cache), then measures engines with
edgekd.perf.measure.measure, each measurement in its own process (as a build's bench stage does), in an
interleaved order so that machine-wide drift hits every variant alike:
  engine   the build's engine (engine/engine.onnx, the session it was built for)      x --same
  basic    the INT8 QDQ model with ONNX Runtime graph optimization 'basic'            x --other
  disable  the INT8 QDQ model with graph optimizations disabled (Q/DQ run as written) x --other
Every measurement becomes a copy of the build's report.json with its latency replaced, and pairs are
gated with edgekd.gate (default thresholds: +10 % p90, 95 % interval):
  engine vs engine (every pair)  should pass: the same engine, only noise differs
  basic/disable vs engine        should fail where the variant is really slower (measured here: the
                                 ratio of median p90s over all its runs says by how much)
Writes benchmarks/results/gate_noise.json and .md.

    python benchmarks/gate_noise.py [--same 8] [--other 4]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import host_info, versions
from edgekd.config.loading import load_model
from edgekd.config.models import BenchConfig, GateConfig
from edgekd.config.target import SessionConfig, Target
from edgekd.examples.digits import load
from edgekd.gate import run_gate
from edgekd.graph.export import INPUT_NAME
from edgekd.graph.resolve import load_inputs
from edgekd.perf.measure import measure

RESULTS = Path(__file__).parent / "results"
# the default profile's bench, SingleStream only (the gate reads only its samples)
BENCH = {"warmup_runs": 50, "min_runs": 300, "max_runs": 20000, "max_seconds": 10.0, "stable_rel_change": 0.02,
         "scenarios": ["SingleStream"], "profile_runs": 0, "compare": False}


def _build(tmp: Path) -> Path:
    out = tmp / "build"
    cmd = [sys.executable, "-m", "edgekd.cli.main", "build", "--target", "x86", "--profile", "ci", "--out", str(out),
           "--cache-dir", str(tmp / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stderr}")
    return out


def _variants(build: Path) -> dict[str, tuple[Path, SessionConfig]]:
    report = json.loads((build / "report.json").read_text())
    target, _ = load_model(Path(report["target"]["file"]), Target, "target")
    engine = json.loads((build / "engine.json").read_text())
    session = SessionConfig.model_validate(engine["session"]) if "session" in engine else target.session
    int8 = build / "student_int8.onnx"
    return {"engine": (build / "engine" / engine["engine_file"], session),
            "basic": (int8, session.model_copy(update={"graph_optimization_level": "basic"})),
            "disable": (int8, session.model_copy(update={"graph_optimization_level": "disable"}))}


def _as_report(base: dict[str, Any], result: dict[str, Any], path: Path) -> Path:
    """The build's report with its latency replaced by one measurement."""
    report = json.loads(json.dumps(base))
    report["latency"] = {**result, "method": "measured", "where": "this host, benchmarks/gate_noise.py"}
    for stage in report["stages"]:
        if "latency.p90_ms" in stage["metrics"]:
            stage["metrics"]["latency.p90_ms"]["value"] = result["p90_ms"]
    path.write_text(json.dumps(report))
    return path


def _measure_all(build: Path, work: Path, same: int, other: int) -> list[dict[str, Any]]:
    variants = _variants(build)
    base = json.loads((build / "report.json").read_text())
    rows = load(seed=0).test.x[:1]  # the digits test sample the build's bench uses
    bench = BenchConfig.model_validate({k: v for k, v in BENCH.items() if k in BenchConfig.model_fields})
    order = ["engine"] * same
    for i, name in enumerate(["basic", "disable"] * other):  # interleave: engine, basic, engine, disable, ...
        order.insert(2 * i + 1, name)
    runs = []
    for i, name in enumerate(order):
        model, session = variants[name]
        start = time.perf_counter()
        result = measure(model, {INPUT_NAME: rows}, load_inputs(model), session, bench, work / f"w{i}")
        runs.append({"index": i, "variant": name, "model": model.name, "graph_optimization_level": session.graph_optimization_level,
                     "runs": result["runs"], "p50_ms": result["p50_ms"], "p90_ms": result["p90_ms"],
                     "seconds": round(time.perf_counter() - start, 2), "load_avg_1min": round(os.getloadavg()[0], 2),
                     "report": str(_as_report(base, result, work / f"report_{i}.json"))})
        print(f"  {i:2d} {name:<8} p90 {result['p90_ms']:.4f} ms  ({result['runs']} runs, load {runs[-1]['load_avg_1min']})", flush=True)
    return runs


def _gate_pairs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    engine = [r for r in runs if r["variant"] == "engine"]
    pairs = [(a, b) for a, b in itertools.combinations(engine, 2)]
    pairs += [(e, o) for o in runs if o["variant"] != "engine" for e in engine]
    out = []
    for base, cand in pairs:
        lat = next(c for c in run_gate(Path(cand["report"]), Path(base["report"])).checks if c.name == "latency p90")
        out.append({"baseline": base["index"], "candidate": cand["index"], "comparison": f"{cand['variant']} vs engine",
                    "verdict": lat.status, "p90_ratio": round(1 + lat.change / 100, 4),
                    "interval": [round(1 + x / 100, 4) for x in lat.interval]})
    return out


def _summaries(runs: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    median = {v: statistics.median(r["p90_ms"] for r in runs if r["variant"] == v) for v in ("engine", "basic", "disable")}
    out = {}
    for comparison in dict.fromkeys(p["comparison"] for p in pairs):
        mine = [p for p in pairs if p["comparison"] == comparison]
        ratios = [p["p90_ratio"] for p in mine]
        variant = comparison.split()[0]
        out[comparison] = {"pairs": len(mine), "verdicts": dict(Counter(p["verdict"] for p in mine)),
                           "p90_ratio_min": min(ratios), "p90_ratio_median": statistics.median(ratios), "p90_ratio_max": max(ratios),
                           "median_p90_ms": median[variant], "slowdown_of_medians": round(median[variant] / median["engine"], 4)}
    return out


def _markdown(data: dict[str, Any]) -> str:
    gate = data["gate"]
    lines = ["# `edgekd gate` on noise and on real slowdowns", "",
             f"Host: {data['host']['cpu']}, {data['host']['cores']} cores, {data['host']['os']}; "
             f"onnxruntime {data['toolchain']['onnxruntime']}. How: {data['how']}.", "",
             f"Gate: p90 may rise by {gate['max_latency_p90_increase_pct']:g} %, {gate['confidence']:.0%} interval, "
             f"{gate['bootstrap_resamples']} resamples. Load average (1 min) during the measurements: "
             f"{data['load_avg_range'][0]} to {data['load_avg_range'][1]} on {data['host']['cores']} cores.", "",
             "| comparison | pairs | pass | inconclusive | fail | p90 ratio min / median / max | median p90 (ms) | slowdown (medians) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in data["summary"].items():
        v = s["verdicts"]
        lines.append(f"| {name} | {s['pairs']} | {v.get('pass', 0)} | {v.get('inconclusive', 0)} | {v.get('fail', 0)} | "
                     f"{s['p90_ratio_min']:.3f} / {s['p90_ratio_median']:.3f} / {s['p90_ratio_max']:.3f} | "
                     f"{s['median_p90_ms']:.4f} | {s['slowdown_of_medians']:.3f}x |")
    same, slow = data["summary"]["engine vs engine"], [data["summary"][k] for k in ("basic vs engine", "disable vs engine")]
    lines += ["", f"Reading: the same engine measured twice failed the gate in {same['verdicts'].get('fail', 0)} of "
              f"{same['pairs']} pairs; single-run p90s differed by up to a ratio of {same['p90_ratio_max']:.3f} "
              "(between-run drift on this loaded machine: compare the p50 column; a whole run shifted like that cannot be told "
              "from a regression by any statistic of one bench per side, docs/ci.md). The slower variants ("
              + ", ".join(f"{s['slowdown_of_medians']:.2f}x" for s in slow) + " the engine's median p90) failed in "
              + " and ".join(f"{s['verdicts'].get('fail', 0)} of {s['pairs']}" for s in slow) + " pairs."]
    lines += ["", "Measurements (in the order taken):", "", "| # | variant | p90 (ms) | p50 (ms) | runs | load avg |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['variant']} | {r['p90_ms']:.4f} | {r['p50_ms']:.4f} | {r['runs']} | {r['load_avg_1min']} |" for r in data["runs"]]
    lines += ["", f"Run: `python benchmarks/gate_noise.py --same {data['same']} --other {data['other']}` "
              f"({data['seconds']:.0f} s in all, of which the build {data['build_seconds']:.0f} s; {data['date']}).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--same", type=int, default=8, help="measurements of the build's engine")
    parser.add_argument("--other", type=int, default=4, help="measurements of each slower variant")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        print("building the example (x86, ci profile, temporary cache)...", flush=True)
        build = _build(Path(tmp))
        build_seconds = round(time.perf_counter() - start, 1)
        runs = _measure_all(build, Path(tmp), args.same, args.other)
        pairs = _gate_pairs(runs)
    for run in runs:
        run.pop("report")
    data = {"host": host_info(), "toolchain": versions(("onnxruntime", "numpy")), "date": time.strftime("%Y-%m-%d"),
            "how": ("every measurement is edgekd.perf.measure.measure in its own process, batch 1 on one digits test sample, "
                    f"bench {json.dumps({k: BENCH[k] for k in ('warmup_runs', 'min_runs', 'max_seconds', 'stable_rel_change')})}; "
                    "variants measured interleaved; every pair gated by edgekd.gate.run_gate on copies of the build's report"),
            "gate": GateConfig().model_dump(), "same": args.same, "other": args.other,
            "load_avg_range": [min(r["load_avg_1min"] for r in runs), max(r["load_avg_1min"] for r in runs)],
            "seconds": round(time.perf_counter() - start, 1), "build_seconds": build_seconds, "runs": runs, "summary": _summaries(runs, pairs), "pairs": pairs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gate_noise.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / "gate_noise.md").write_text(_markdown(data))
    print(_markdown(data))


if __name__ == "__main__":
    main()
