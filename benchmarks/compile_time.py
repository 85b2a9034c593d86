"""How long `edgekd compile` of a full-size ResNet-18 takes cold on this machine, with the tuner's
pruning on and off (issue 16, point 5: within 3 minutes cold).

The model: edgekd.examples.zoo's ResNet-18 (random weights, optimum export; the export is not part of
the timed compile). Each mode runs `edgekd compile MODEL --target x86` in its own process with an
empty stage cache; the wall time is time.perf_counter around the whole CLI process (interpreter start
included), the per-stage seconds are the ones the report records, the tuner's step times are the
tuning record's ("times"). The profile is benchmarks/projects/compile_time_profile.toml (the default
budgets without size_mb and latency_p90_ms) with [recipe.tune] prune = true / false. The host's CPU,
its flags and the 1-minute load average before and after each run are recorded: on a shared host the
times are not the quiet machine's.

    python benchmarks/compile_time.py [--modes pruned,unpruned] [--arch resnet] [--workdir DIR]

Writes benchmarks/results/compile_time.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import cpu_flags, host_info

ROOT = Path(__file__).parent
RESULTS = ROOT / "results"
PROFILE = ROOT / "projects" / "compile_time_profile.toml"
GOAL_S = 180.0  # issue 16: a ResNet-18 compile finishes within 3 minutes cold on the 2-core machine
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _numerics(session: dict[str, Any]) -> str:
    """ONNX Runtime's graph optimization level, or OpenVINO's inference precision."""
    return str(session.get("graph_optimization_level", session.get("inference_precision_hint", "")))


def _compile(model: Path, workdir: Path, mode: str, target: str) -> dict[str, Any]:
    profile = workdir / f"profile_{mode}.toml"
    profile.write_text(PROFILE.read_text() + f"\n[recipe.tune]\nprune = {'true' if mode == 'pruned' else 'false'}\n")
    cache, out = workdir / f"cache_{mode}", workdir / f"out_{mode}"
    for folder in (cache, out):  # cold: an empty stage cache, a fresh build folder
        shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "edgekd.cli.main", "compile", str(model), "--target", target, "--profile", str(profile),
           "--out", str(out), "--cache-dir", str(cache), "--json"]
    load_before, start = os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"compile ({mode}) failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    report = json.loads(proc.stdout)
    tuning = report.get("tuning") or {}
    chosen = tuning["rows"][tuning["chosen"]] if tuning else {}
    return {"mode": mode, "wall_s": wall_s, "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
            "target": report["target"]["name"], "stage_s": {s["name"]: s["seconds"] for s in report["stages"]},
            "tuning_times_s": {k: v for k, v in tuning.get("times", {}).items() if k != "how"},
            "candidates": len(tuning.get("rows", [])) + len(tuning.get("pruned", [])),
            "timed_in_full": len(tuning.get("rows", [])),
            "pruned": [{**{k: p[k] for k in ("variant", "threads", "stage", "why")}, "numerics": _numerics(p["session"])}
                       for p in tuning.get("pruned", [])],
            "chosen": {k: chosen.get(k) for k in ("variant", "threads", "p90_ms", "accuracy")},
            "chosen_session": chosen.get("session"), "tuning_how": tuning.get("how", "")}


def _cell_s(value: float | None) -> str:
    return "not run" if value is None else f"{value:.1f}"


def _markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    stages = list(runs[0]["stage_s"])
    steps = sorted({k for r in runs for k, v in r["tuning_times_s"].items() if isinstance(v, float)})
    md = ["# `edgekd compile` time, cold (issue 16, point 5)", "", result["what"] + ".", "", result["how"] + ".", "",
          (f"Host: {result['host']['cpu']}, {result['host']['cores']} usable cores, flags {', '.join(result['flags'])}. "
           "Load: the 1-minute load average before/after each run is in the table (above 2 the 2 cores were shared)."), "",
          "| mode | wall | goal 180 s | load before / after | target | candidates | timed in full | chosen | chosen p90 |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        c = r["chosen"]
        md.append(f"| {r['mode']} | {r['wall_s']:.1f} s | {'met' if r['wall_s'] <= GOAL_S else 'not met'} | "
                  f"{r['load_avg_1min_before']:.1f} / {r['load_avg_1min_after']:.1f} | {r['target']} | {r['candidates']} | "
                  f"{r['timed_in_full']} | {c['variant']}, {c['threads']} thread(s) | {c['p90_ms']:.2f} ms |")
    md += ["", "Seconds per stage (as each stage records it):", "", "| mode | " + " | ".join(stages) + " |",
           "|---" * (len(stages) + 1) + "|"]
    md += [f"| {r['mode']} | " + " | ".join(f"{r['stage_s'].get(s, 0):.1f}" for s in stages) + " |" for r in runs]
    md += ["", "Inside the compile stage, the tuner's steps (seconds, the tuning record's `times`):", "",
           "| mode | " + " | ".join(steps) + " |", "|---" * (len(steps) + 1) + "|"]
    md += [f"| {r['mode']} | " + " | ".join(_cell_s(r["tuning_times_s"].get(s)) for s in steps) + " |" for r in runs]
    chosen = {(r["chosen"]["variant"], r["chosen"]["threads"], _numerics(r["chosen_session"] or {})) for r in runs}
    if len(runs) > 1:
        md += ["", "Same engine chosen in every mode: " + ("yes, " + ", ".join(map(str, chosen.pop())) if len(chosen) == 1 else
                                                          f"no ({'; '.join(map(str, chosen))})") + "."]
    for r in runs:
        if r["pruned"]:
            md += ["", f"Cut before full timing ({r['mode']}):", ""]
            md += [f"- {p['variant']}, {p['threads']} thread(s), {p.get('numerics', '?')}: {p['stage']}: {p['why']}" for p in r["pruned"]]
    return "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="pruned,unpruned")
    parser.add_argument("--arch", default="resnet", help="an edgekd.examples.zoo architecture (full size)")
    parser.add_argument("--target", default="x86")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the model and builds here (default: a temp folder)")
    parser.add_argument("--name", default="compile_time")
    args = parser.parse_args()
    from edgekd.examples import zoo

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model = zoo.export(args.arch, workdir / "zoo", size="full", exporter="optimum")
        runs = []
        for mode in args.modes.split(","):
            runs.append(_compile(model, workdir, mode, args.target))
            print(f"{mode}: {runs[-1]['wall_s']:.1f} s", file=sys.stderr)
            _write(args, runs)  # after each mode: a later mode that does not finish leaves the earlier ones recorded


def _write(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    from edgekd.examples import zoo

    result = {
        "what": (f"wall-clock of `edgekd compile` of a full-size {zoo.ARCHS[args.arch].description} (random weights, optimum "
                 f"export) for --target {args.target}, cold (empty stage cache), tuner pruning on vs off"),
        "how": ("measured: time.perf_counter around each whole CLI process; stage seconds from the report; profile "
                f"{PROFILE.relative_to(ROOT.parent)} + [recipe.tune] prune; evaluation on generated feeds (no labels: "
                "the tuner judges INT8 by top-1 agreement with fp32)"),
        "host": host_info(), "flags": [f for f in FLAGS if f in cpu_flags()], "goal_s": GOAL_S, "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{args.name}.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
