"""benchmarks/peers_real.py's results: per model the measured rows, the host floor and the issue-16
goal verdicts, written as OUT/NAME.json and OUT/NAME.md."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import cpu_flags, host_info, versions

if TYPE_CHECKING:
    from peers_real import RunSettings
    from peers_real_prep import Prepared

RESULTS = Path(__file__).parent / "results"
TOOLS = ("torch", "transformers", "onnxruntime", "onnx", "optimum", "optimum-onnx", "openvino", "nncf", "onnxruntime-genai", "numpy")
GOAL_PEER, GOAL_FLOOR, FLOOR_MIN_MACS = 0.8, 2.0, 100_000_000
ROW_KEYS = ("name", "kind", "precision", "what", "model", "accuracy", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "samples", "rounds",
            "round_p90_ms", "p90_round_median_ms", "threads", "graph_ops", "top_ops", "bench")


def compute_precision(engine: dict[str, Any]) -> str:
    """The precision an engine computes in: its own, except an fp32 OpenVINO engine compiled with the bf16
    inference precision hint, which runs its float ops in bf16."""
    precision = engine.get("precision", "int8")
    hint = (engine.get("session") or {}).get("inference_precision_hint")
    return "bf16" if precision == "fp32" and hint == "bf16" else precision


def host_floor(target: str, precision: str, macs: int, weight_bytes: int = 0, cache_bytes: int = 0) -> dict[str, Any]:
    """The roofline floor of one inference on this host's cores, from the target's [device]: the larger
    of the compute time (MACs / the peak rate of `precision`: peak ops per cycle per core x cores x
    clock, 2 ops per MAC) and, where the engine's weights (`weight_bytes`) exceed the last-level cache,
    the time to read them and the KV cache (`cache_bytes`) once from DRAM at the [device]'s DRAM rate
    (before its bandwidth_efficiency: the rate itself). Assumptions stated."""
    from edgekd.analysis.device import resolve
    from edgekd.config.loading import ConfigSearch, load_target

    resolved = load_target(target, ConfigSearch())
    device = resolved.config.device
    if device is None:
        return {"ms": None, "how": f"not available: target {resolved.name} has no [device] figures"}
    figures = resolve(device)
    used = precision if precision in figures.peak_tops else "int8"
    notes = [a for a in figures.assumptions if a.startswith(("cores", "clock", f"[device] peak_ops_per_cycle_per_core.{used}"))]
    if used != precision:
        notes.append(f"the engine's precision {precision} has no peak in [device]; the int8 peak is used")
    compute_ms = 2.0 * macs / (figures.peak_tops[used] * 1e12) * 1e3
    out = {"ms": compute_ms, "compute_ms": compute_ms, "precision": used, "peak_tops": figures.peak_tops[used], "target": resolved.name,
           "how": (f"estimated: 2 x {macs:,} MACs / {figures.peak_tops[used]:.3g} TOPS ({used} peak of {resolved.name}'s [device] on "
                   f"this host: {'; '.join(notes)}); assumes every MAC at peak")}
    cache_mb, dram = figures.cache_mb, figures.dram_bandwidth_gbs
    if weight_bytes and cache_mb is not None and dram and weight_bytes > cache_mb * 1e6:
        memory_ms = (weight_bytes + cache_bytes) / (dram * 1e9) * 1e3
        out |= {"memory_ms": memory_ms, "dram_gbs": dram, "ms": max(compute_ms, memory_ms),
                "bound": "memory" if memory_ms > compute_ms else "compute"}
        out["how"] += (f"; memory: the engine's {weight_bytes / 1e6:,.1f} MB of weights (its files less embedding tables only "
                       f"gathered from; over the {cache_mb:g} MB cache) plus "
                       f"{cache_bytes / 1e6:,.1f} MB of KV cache read once from DRAM at {dram:.3g} GB/s ([device] DRAM rate, "
                       f"before its bandwidth_efficiency) = {memory_ms:.3f} ms; the floor is the larger (roofline)")
    else:
        out["how"] += ("; memory time not counted: the engine's weights fit the last-level cache" if weight_bytes
                       else "; memory time not counted")
    return out


def verdicts(rows: list[dict[str, Any]], macs: Any, floor: dict[str, Any] | None) -> dict[str, Any]:
    """edgekd p90 / best peer p90 (<= 0.8) and edgekd p90 / floor (<= 2 at >= 100 M MACs)."""
    by = {r["name"]: r for r in rows}
    edgekd, peers = by.get("edgekd"), [r for r in rows if not r["name"].startswith("edgekd")]  # edgekd-genai: the same engine
    if edgekd is None or not peers:
        return {"how": "not available: " + ("edgekd's row was not measured" if edgekd is None else "no peer was measured")}
    best = min(peers, key=lambda r: r["p90_ms"])
    out: dict[str, Any] = {"best_peer": best["name"], "edgekd_over_best_peer_p90": edgekd["p90_ms"] / best["p90_ms"],
                           "goal_peer": f"<= {GOAL_PEER}x the best peer's p90"}
    out["peer_goal_met"] = out["edgekd_over_best_peer_p90"] <= GOAL_PEER
    rounds = [r for r in peers if r.get("p90_round_median_ms")]
    if edgekd.get("p90_round_median_ms") and rounds:  # a second view, not the goal: one disturbed round moves it less
        steady = min(rounds, key=lambda r: r["p90_round_median_ms"])
        out["round_median"] = {"best_peer": steady["name"], "edgekd_over_best_peer": edgekd["p90_round_median_ms"] / steady["p90_round_median_ms"]}
    if floor and floor.get("ms"):
        out["edgekd_over_floor_p90"] = edgekd["p90_ms"] / floor["ms"]
        applies = isinstance(macs, int) and macs >= FLOOR_MIN_MACS
        out["floor_goal_met"] = out["edgekd_over_floor_p90"] <= GOAL_FLOOR if applies else None
        out["goal_floor"] = f"<= {GOAL_FLOOR}x the floor" + ("" if applies else " (does not apply: under 100 M MACs)")
    if "edgekd-genai" in by:  # the same engine on onnxruntime-genai (its genai_config.json): a second view, not the goal's row
        genai = by["edgekd-genai"]["p90_ms"]
        out["edgekd_genai"] = {"over_best_peer_p90": genai / best["p90_ms"],
                               **({"over_floor_p90": genai / floor["ms"]} if floor and floor.get("ms") else {})}
    out["accuracy"] = "not compared: random weights, no labelled data (latency only); 'equal accuracy' is not verified here"
    return out


def short_error(text: str) -> str:
    """A failure in one line: a worker's "exited N:" with the last line of its traceback."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if len(lines) < 2 else f"{lines[0]} {lines[-1]}"


GATHERS = {"Gather", "GatherBlockQuantized"}  # a table these read is gathered from: one row per token, not read whole


def _gathered_bytes(engine: Path) -> int:
    """Bytes of an ONNX engine's initializers that only Gather (or GatherBlockQuantized: a 4-bit table
    and its scales) nodes read (embedding tables: one row per token, not the whole table, per
    inference); 0 for other engines (an OpenVINO IR)."""
    if engine.suffix != ".onnx" or not engine.is_file():
        return 0
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(engine)).graph
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return sum(numpy_helper.to_array(t).nbytes for t in graph.initializer if readers.get(t.name) and readers[t.name] <= GATHERS)


def _phase_bytes(engine: Path, case: str) -> int | None:
    """A prompt/decode split engine's (edgekd.graph.phase_split: a top-level If, "phase/If") weights in
    bytes that `case` reads: the initializers of the branch that runs (prefill: the prompt branch, else
    the decode one) and the outer ones its nodes read, less those only gathered from; None for others."""
    if engine.suffix != ".onnx" or not engine.is_file():
        return None
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(engine)).graph
    phase = next((n for n in graph.node if n.op_type == "If" and n.name == "phase/If"), None)
    if phase is None:
        return None
    branch = next(a.g for a in phase.attribute if a.name == ("then_branch" if case == "prefill" else "else_branch"))
    readers: dict[str, set[str]] = {}
    for node in branch.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    tensors = [*branch.initializer, *(t for t in graph.initializer if t.name in readers)]
    return sum(numpy_helper.to_array(t).nbytes for t in tensors if not readers.get(t.name, GATHERS) <= GATHERS)


def _bytes_read(edgekd: dict[str, Any], feed: Path, case: str = "single") -> tuple[int, int]:
    """(the engine's weights in bytes: its files less the embedding tables only gathered from, or a
    prompt/decode split engine's weights of the branch `case` runs; the feed's past key/values in bytes:
    the KV cache a decode step reads)."""
    import numpy as np

    engine_dir = Path(edgekd["dir"])
    engine = engine_dir / edgekd["engine"]["engine_file"]
    weights = _phase_bytes(engine, case)
    if weights is None:
        files = sum(f.stat().st_size for f in engine_dir.rglob("*") if f.is_file()) if engine_dir.is_dir() else 0
        weights = files - _gathered_bytes(engine)
    with np.load(feed) as arrays:
        cache = sum(arrays[k].nbytes for k in arrays.files if k.startswith(("past", "cache")))
    return weights, int(cache)


def model_result(label: str, p: Prepared, case: str, rows: list[dict[str, Any]], failures: dict[str, str],
                 load: dict[str, float], art: dict[str, Any]) -> dict[str, Any]:
    macs = p.macs.get(case)
    edgekd = art.get("edgekd") or {}
    engine = edgekd.get("engine", {})
    floor = None
    if isinstance(macs, int) and edgekd:
        floor = host_floor(edgekd["target"], compute_precision(engine), macs, *_bytes_read(edgekd, p.cases[case], case))
    kept = [{k: r.get(k) for k in ROW_KEYS} for r in rows]
    return {"name": label, "case": case, "description": p.description, "macs": macs, "rows": kept,
            "failures": {name: short_error(why) for name, why in failures.items()},
            "load_average_1min": load, "floor": floor, "verdicts": verdicts(kept, macs, floor),
            "edgekd_engine": {k: engine.get(k) for k in ("runtime", "precision", "source_model", "session", "engine_file")} | {
                "target": edgekd.get("target"), "build": edgekd.get("note")} if edgekd else None,
            "optimum_recipe": art["optimum"][1] if art.get("optimum") else None}


def write(out: Path, name: str, models: list[dict[str, Any]], s: RunSettings) -> None:
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4")))
    result = {"what": "edgekd's x86 engine vs its peers on real architectures (random weights: latency only), batch 1, this host",
              "how": ("measured: every row in its own process (benchmarks/peers_worker.py; row kinds in peers_real_rows.py), timed with "
                      f"edgekd.perf.measure.sample at batch 1, {s.rounds} rounds, rows in an order shuffled per round (seed 0); each round "
                      f"{s.bench['warmup_runs']} warm-up runs then at least {s.bench['min_runs']} timed runs (fewer, down to 100, where they "
                      f"would take over {s.bench['max_seconds']} s); p50/p90 over all rounds' samples pooled. Threads: each runtime's own "
                      "default, stated per row."),
              "quick": s.prep.quick, "host": {**host_info(), "flags": flags}, "toolchain": versions(TOOLS),
              "settings": {"rounds": s.rounds, "bench": s.bench, "profile_runs": s.profile_runs, "calibration_rows": s.prep.calib_rows,
                           "sequence": s.prep.sequence, "target": s.target, "edgekd_profile": s.profile},
              "models": models}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=1))


def _threads(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in (r.get("threads") or {}).items())


def _model_md(m: dict[str, Any]) -> list[str]:
    macs = m["macs"] if isinstance(m["macs"], int) else None
    macs_text = f"{macs / 1e6:,.1f} M" if macs else m["macs"]
    md = [f"## {m['name']}", "", f"{m['description']}; MACs: {macs_text} (edgekd.analysis.graph.graph_costs at the timed shapes).", ""]
    load = m.get("load_average_1min")
    if load:
        md += [f"1-minute load average {load['before']:.1f} before this model's rounds, {load['after']:.1f} after.", ""]
    md += ["| row | precision | p50 ms | p90 ms | accuracy | threads |", "|---|---|---|---|---|---|"]
    md += [f"| {r['name']} | {r['precision']} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {'-' if r['accuracy'] is None else r['accuracy']} | "
           f"{_threads(r)} |" for r in sorted(m["rows"], key=lambda r: r["p90_ms"])]
    md += ["", *(f"- `{r['name']}`: {r['what']}" for r in m["rows"])]
    md += [f"- `{n}`: **not measured**: {why}" for n, why in m.get("failures", {}).items()]
    v, floor = m["verdicts"], m.get("floor")
    md.append("")
    if "best_peer" in v:
        md.append(f"- edgekd p90 / best peer ({v['best_peer']}) p90 = **{v['edgekd_over_best_peer_p90']:.2f}** "
                  f"(goal {v['goal_peer']}: {'met' if v['peer_goal_met'] else 'NOT met'})")
        if "round_median" in v:
            rm = v["round_median"]
            md.append(f"- the median over rounds of each round's p90 (the tuner's statistic; not the goal's): edgekd / best peer "
                      f"({rm['best_peer']}) = {rm['edgekd_over_best_peer']:.2f}")
        if floor and "edgekd_over_floor_p90" in v:
            met = {True: "met", False: "NOT met", None: "n/a"}[v["floor_goal_met"]]
            md.append(f"- floor {floor['ms']:.3f} ms; edgekd p90 / floor = **{v['edgekd_over_floor_p90']:.2f}** (goal {v['goal_floor']}: {met})")
        if "edgekd_genai" in v:
            g = v["edgekd_genai"]
            md.append(f"- edgekd's engine on onnxruntime-genai (row edgekd-genai): p90 / best peer = **{g['over_best_peer_p90']:.2f}**"
                      + (f", / floor = {g['over_floor_p90']:.2f}" if "over_floor_p90" in g else ""))
        md.append(f"- accuracy: {v['accuracy']}")
    else:
        md.append(f"- verdicts: {v['how']}")
    if floor:
        md.append(f"- floor: {floor['how']}")
    if m.get("edgekd_engine"):
        md.append(f"- edgekd's engine: {json.dumps(m['edgekd_engine'])}")
    for r in m["rows"]:
        if r.get("top_ops"):
            md.append(f"- per-op `{r['name']}`: " + ", ".join(f"{o['op_type']} {o['ms']:.3f} ms ({o['pct']:.0f} %)" for o in r["top_ops"]))
    return [*md, ""]


def markdown(result: dict[str, Any]) -> str:
    h = result["host"]
    md = [f"# edgekd vs peers on real architectures{' (QUICK: tiny sizes, a smoke test, not a result)' if result['quick'] else ''}", "",
          result["how"], "", f"Host: {h['cpu']}, {h['cores']} usable cores, flags {' '.join(h['flags'])}.",
          "Toolchain: " + ", ".join(f"{k} {v}" for k, v in result["toolchain"].items()) + ".", "",
          "Random weights: every row reports latency only (no labelled data for these models).", ""]
    for m in result["models"]:
        md += _model_md(m)
    return "\n".join(md)


def refloor(out: Path, name: str, workdir: Path) -> None:
    """Recompute every model's floor and verdicts in OUT/NAME.json from the models a run kept in
    `workdir` (--workdir): for a change to how the floor is estimated, without re-measuring."""
    result = json.loads((out / f"{name}.json").read_text())
    for m in result["models"]:
        engine, base = m.get("edgekd_engine"), m["name"].split("-")[0]
        if not engine or not isinstance(m["macs"], int):
            continue
        feed = workdir / (f"{base}_{m['case']}_feed.npz" if m["case"] != "single" else f"{base}_feed.npz")
        edgekd = {"dir": str(workdir / base / "edgekd" / "engine"), "engine": engine}
        m["floor"] = host_floor(engine["target"], compute_precision(engine), m["macs"], *_bytes_read(edgekd, feed, m["case"]))
        m["verdicts"] = verdicts(m["rows"], m["macs"], m["floor"])
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=1))


def render(out: Path, name: str) -> None:
    result = json.loads((out / f"{name}.json").read_text())
    atomic_write_text(out / f"{name}.md", markdown(result) + "\n")
    print(markdown(result))
