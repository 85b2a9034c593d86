"""benchmarks/peers.py's results: the comparisons computed from the measured rows, and the JSON and
Markdown files under benchmarks/results/."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import cpu_flags, host_info, versions

if TYPE_CHECKING:
    from peers_models import Build

RESULTS = Path(__file__).parent / "results"
PEERS = ("torch-eager-fp32", "ort-fp32-default", "optimum-avx512_vnni-int8")  # the student's peers
TOOLS = ("torch", "onnxruntime", "onnx", "optimum", "optimum-onnx", "datasets", "numpy", "scikit-learn")


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def round_ratios(num: dict[str, Any], den: list[dict[str, Any]]) -> dict[str, float]:
    """num's p90 over the fastest of `den`, per round (the rows were timed in the same rounds):
    median, min and max over the rounds."""
    ratios = [num["round_p90_ms"][r] / min(d["round_p90_ms"][r] for d in den) for r in range(num["rounds"])]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def threads_text(row: dict[str, Any]) -> str:
    t = row["threads"]
    if "torch.get_num_threads" in t:
        return f"torch {t['torch.get_num_threads']}"
    return f"ORT {t['compute_threads']} (intra_op_num_threads={t['intra_op_num_threads_set']})"


def session_text(row: dict[str, Any]) -> str:
    session = row.get("session")
    if session is None:
        return "torch eager, torch.inference_mode()"
    if "ort_default" in session:
        return "onnxruntime.SessionOptions() defaults" + (f" + {session['ort_default']}" if session["ort_default"] else "")
    s = session["edgekd"]
    return (f"edgekd open_session: level '{s['graph_optimization_level']}', intra-op {s['intra_op_num_threads']} (0 = every usable core), "
            f"inter-op {s['inter_op_num_threads']}, {s['execution_mode']}")


def analysis(rows: list[dict[str, Any]], variants: list[dict[str, Any]], drop_pt: float, engine_model: str) -> dict[str, Any]:
    """The comparisons the investigation rests on, all from this run's numbers."""
    by = _by_name(variants)
    out: dict[str, Any] = {}
    labels = sorted({v["name"].split(".")[0] for v in variants if v["kind"] == "ort" and not v["name"].startswith("identity")})
    def ratio(a: str, b: str, key: str) -> float:
        return by[a][key] / by[b][key]

    out["one_over_all_threads"] = {m: {k: ratio(f"{m}.t1.all", f"{m}.tall.all", k) for k in ("p50_ms", "p90_round_median_ms")} for m in labels}
    out["extended_over_all_at_1_thread"] = {m: {k: ratio(f"{m}.t1.extended", f"{m}.t1.all", k) for k in ("p50_ms", "p90_round_median_ms")}
                                            for m in labels}
    floor = {k: by[f"identity-floor.{k}"]["p90_ms"] for k in ("t1", "tall")}
    out["identity_floor_p90_ms"] = floor
    edgekd = _by_name(rows)["edgekd"]
    out["floor_share_of_edgekd_p90"] = floor["tall"] / edgekd["p90_ms"]
    fp32_acc = _by_name(rows)["ort-fp32-default"]["accuracy"]
    candidates = [v for v in variants if v["kind"] == "ort" and v["accuracy"] is not None]
    ok = [v for v in candidates if v["accuracy"] >= fp32_acc - drop_pt]
    best = min(ok, key=lambda v: v["p90_round_median_ms"])
    out["fastest_variant_at_equal_accuracy"] = {
        "name": best["name"], "p90_round_median_ms": best["p90_round_median_ms"], "p50_ms": best["p50_ms"], "accuracy": best["accuracy"],
        "session": best["session"], "model": Path(best["model"]).name,
        "rule": (f"lowest median-over-rounds p90 (robust to the rounds a neighbour's load hit) among accuracy >= ONNX Runtime fp32 "
                 f"accuracy ({fp32_acc:.2f} %) - {drop_pt} pt (the profile's quantize_accuracy_drop_pt)"),
        "edgekd_over_it_p90_round_median": edgekd["p90_round_median_ms"] / best["p90_round_median_ms"],
        "edgekd_over_it_p50": edgekd["p50_ms"] / best["p50_ms"]}
    twin = [v for v in candidates if Path(v["model"]).name == engine_model and v["session"] == edgekd["session"]]
    if twin:  # the engine's own model and settings, in another process: how far apart two identical rows land
        out["edgekd_twin"] = {"name": twin[0]["name"], "edgekd_over_twin_p90": edgekd["p90_ms"] / twin[0]["p90_ms"],
                              "edgekd_over_twin_p50": edgekd["p50_ms"] / twin[0]["p50_ms"]}
    out["best_fp32_variant"] = min((v for v in candidates if v["precision"] == "fp32"), key=lambda v: v["p90_round_median_ms"])["name"]
    out["best_int8_variant"] = min((v for v in candidates if v["precision"] == "int8"), key=lambda v: v["p90_round_median_ms"])["name"]
    return out


def comparison(rows: list[dict[str, Any]], variants: list[dict[str, Any]]) -> dict[str, Any]:
    by = _by_name(rows)
    edgekd, peers = by["edgekd"], [by[n] for n in PEERS if n in by]
    best = min(peers, key=lambda r: r["p90_ms"])
    best_p50 = min(peers, key=lambda r: r["p50_ms"])
    out = {"best_peer": best["name"], "best_peer_accuracy": best["accuracy"], "edgekd_accuracy": edgekd["accuracy"],
           "edgekd_over_best_peer_p90": edgekd["p90_ms"] / best["p90_ms"], "edgekd_over_best_peer_per_round": round_ratios(edgekd, peers),
           "best_peer_p50": best_p50["name"], "edgekd_over_best_peer_p50": edgekd["p50_ms"] / best_p50["p50_ms"],
           "how": ("best peer: the student peer with the lowest pooled p90; ratio = edgekd's p90 / its p90 (pooled samples); per round: "
                   "edgekd's p90 / the lowest peer p90 of that round; p50: edgekd's p50 / the lowest peer p50")}
    if "teacher-torch-eager" in by:
        teacher = by["teacher-torch-eager"]
        out["teacher_eager_over_edgekd_p90"] = teacher["p90_ms"] / edgekd["p90_ms"]
        out["teacher_eager_over_edgekd_p50"] = teacher["p50_ms"] / edgekd["p50_ms"]
        per_round = [teacher["round_p90_ms"][r] / edgekd["round_p90_ms"][r] for r in range(edgekd["rounds"])]
        out["teacher_eager_over_edgekd_per_round"] = {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)}
        one = _by_name(variants).get("teacher-torch-eager.t1")
        if one is not None:  # the teacher at its better thread count, for a speedup that is not the oversubscription tail
            fastest = min((teacher, one), key=lambda r: r["p90_ms"])
            out["teacher_eager_best_threads_over_edgekd_p90"] = {"teacher_row": fastest["name"], "ratio": fastest["p90_ms"] / edgekd["p90_ms"],
                                                                  "ratio_p50": fastest["p50_ms"] / edgekd["p50_ms"]}
    return out


def _ops_text(ops: dict[str, int] | None) -> str:
    return "" if not ops else ", ".join(f"{k}x{v}" if v > 1 else k for k, v in sorted(ops.items()))


TABLE_HEAD = ["| {what} | precision | threads | p50 µs | p90 µs | p90 per round: median (min-max) µs | accuracy % | samples |",
              "|---|---|---|---|---|---|---|---|"]


def _row_line(r: dict[str, Any]) -> str:
    rp = r["round_p90_ms"]
    return (f"| {r['name']} | {r['precision']} | {threads_text(r)} | {r['p50_ms'] * 1000:.1f} | {r['p90_ms'] * 1000:.1f} | "
            f"{r['p90_round_median_ms'] * 1000:.1f} ({min(rp) * 1000:.1f}-{max(rp) * 1000:.1f}) | "
            f"{'-' if r['accuracy'] is None else format(r['accuracy'], '.2f')} | {r['samples']} |")


def markdown(result: dict[str, Any]) -> str:
    c, rows = result["comparison"], result["rows"]
    md = [f"# edgekd vs peers: {result['project']['name']} student on this host", "",
          result["how"], "", f"Host: {result['host']['cpu']}, {result['host']['cores']} cores; {result['host_note']}. "
          f"1-minute load average (os.getloadavg) {result['load_average_1min']['before']:.1f} before the timing rounds, "
          f"{result['load_average_1min']['after']:.1f} after: other work shared these 2 cores.",
          "Toolchain: " + ", ".join(f"{k} {v}" for k, v in result["toolchain"].items()) + ".", "",
          TABLE_HEAD[0].format(what="row"), TABLE_HEAD[1], *(_row_line(r) for r in rows), "",
          f"**edgekd / best peer ({c['best_peer']}), p90: {c['edgekd_over_best_peer_p90']:.3f}** "
          f"(per round: median {c['edgekd_over_best_peer_per_round']['median']:.3f}, {c['edgekd_over_best_peer_per_round']['min']:.3f}-"
          f"{c['edgekd_over_best_peer_per_round']['max']:.3f}); below 1 means edgekd is faster. Accuracy: edgekd {c['edgekd_accuracy']:.2f} %, "
          f"{c['best_peer']} {c['best_peer_accuracy']:.2f} %. At p50 (best peer there: {c['best_peer_p50']}): {c['edgekd_over_best_peer_p50']:.3f}."]
    if "teacher_eager_over_edgekd_p90" in c:
        t = c["teacher_eager_over_edgekd_per_round"]
        md.append(f"\n**Teacher (PyTorch eager) / edgekd, p90: {c['teacher_eager_over_edgekd_p90']:.1f}x** (per round: median {t['median']:.1f}x, "
                  f"{t['min']:.1f}-{t['max']:.1f}x; at p50: {c['teacher_eager_over_edgekd_p50']:.1f}x).")
        if "teacher_eager_best_threads_over_edgekd_p90" in c:
            best = c["teacher_eager_best_threads_over_edgekd_p90"]
            md.append(f"With the teacher at its faster thread count ({best['teacher_row']}): **{best['ratio']:.1f}x** at p90, {best['ratio_p50']:.1f}x at p50.")
    md += ["", "Rows:", "", *(f"- `{r['name']}`: {r['what']}; {session_text(r)}" for r in rows), "",
           f"edgekd's engine: {result['engine']}", "", f"optimum recipe: {json.dumps(result['optimum_recipe'])}", ""]
    if result["variants"]:
        a = result["analysis"]
        md += ["## Why: variants of the same student", "",
               "Every ONNX model here opened through edgekd's session settings with only the thread count and the graph "
               "optimization level changed; timed in the same interleaved rounds as the rows above.", "",
               TABLE_HEAD[0].format(what="variant"), TABLE_HEAD[1], *(_row_line(v) for v in result["variants"]), "",
               "Kernels after ONNX Runtime's optimizer (optimized_model_filepath of an identical session):", "",
               *(f"- `{r['name']}`: {_ops_text(r['graph_ops'])}" for r in rows + result["variants"] if r["graph_ops"] and r["name"].endswith((".t1.all", ".t1.extended")) or r["name"] in ("ort-fp32-default", "optimum-avx512_vnni-int8", "edgekd")),
               "", "Computed from the numbers above:", "",
               "- 1 thread / every core (level 'all'), p50 and median round p90: "
               + ", ".join(f"{k} {v['p50_ms']:.2f} / {v['p90_round_median_ms']:.2f}" for k, v in a["one_over_all_threads"].items()),
               "- level 'extended' / 'all' (1 thread), p50 and median round p90: "
               + ", ".join(f"{k} {v['p50_ms']:.2f} / {v['p90_round_median_ms']:.2f}" for k, v in a["extended_over_all_at_1_thread"].items()),
               f"- ONNX Runtime's per-call floor (one Identity node): p90 {a['identity_floor_p90_ms']['t1'] * 1000:.1f} µs at 1 thread, "
               f"{a['identity_floor_p90_ms']['tall'] * 1000:.1f} µs at every core = {a['floor_share_of_edgekd_p90']:.0%} of edgekd's p90",
               f"- fastest fp32 variant: {a['best_fp32_variant']}; fastest INT8 variant: {a['best_int8_variant']}",
               *([f"- noise: edgekd's engine settings measured again as variant {a['edgekd_twin']['name']} (same model and session, "
                  f"another process): edgekd / twin = {a['edgekd_twin']['edgekd_over_twin_p90']:.2f} at p90, "
                  f"{a['edgekd_twin']['edgekd_over_twin_p50']:.2f} at p50"] if "edgekd_twin" in a else []),
               f"- fastest variant at equal accuracy ({a['fastest_variant_at_equal_accuracy']['rule']}): "
               f"**{a['fastest_variant_at_equal_accuracy']['name']}** ({a['fastest_variant_at_equal_accuracy']['model']}), median round p90 "
               f"{a['fastest_variant_at_equal_accuracy']['p90_round_median_ms'] * 1000:.1f} µs, p50 {a['fastest_variant_at_equal_accuracy']['p50_ms'] * 1000:.1f} µs, "
               f"accuracy {a['fastest_variant_at_equal_accuracy']['accuracy']:.2f} %; edgekd's engine is "
               f"{a['fastest_variant_at_equal_accuracy']['edgekd_over_it_p90_round_median']:.2f}x that (median round p90), "
               f"{a['fastest_variant_at_equal_accuracy']['edgekd_over_it_p50']:.2f}x at p50", ""]
    profiled = [r for r in rows + result["variants"] if r.get("top_ops")]
    if profiled:
        md += ["## Per-op time (ONNX Runtime profiler)", "", result["profile_how"], ""]
        for r in profiled:
            md.append(f"- `{r['name']}`: " + ", ".join(f"{o['op_type']} {o['ms'] * 1000:.1f} µs ({o['pct']:.0f} %)" for o in r["top_ops"]))
        md.append("")
    if result.get("findings"):
        md += ["## Findings", "", *result["findings"], ""]
    return "\n".join(md)


def write_results(name: str, b: Build, rows: list[dict[str, Any]], variants: list[dict[str, Any]], optimum_recipe: dict[str, Any],
                  bench: dict[str, Any], args: argparse.Namespace, calib_count: int, load: dict[str, Any]) -> None:
    flags = cpu_flags()
    drop = b.ctx.profile.budgets.quantize_accuracy_drop_pt or 0.0
    engine = {k: b.engine.get(k) for k in ("precision", "source_model", "session", "tuning") if k in b.engine}
    engine_text = (f"{b.engine.get('precision', 'int8')} graph {b.engine.get('source_model', 'student_int8.onnx')} optimized by ORT, "
                   f"session {b.engine_session.model_dump()} ({'tuned by the compile stage' if b.engine.get('tuning') else 'the target file [session]'}); "
                   f"build: {b.note}")
    result = {
        "what": f"edgekd's engine vs peers on the same student ({b.ctx.project.name}), batch-1 latency and test accuracy, this host",
        "how": (f"measured: every row in its own process (benchmarks/peers_worker.py), timed with edgekd.perf.measure.sample at batch 1 "
                f"(one test image), {args.rounds} rounds; per round each row does up to {bench['warmup_runs']} warm-up runs then at least "
                f"{bench['min_runs']} timed runs (fewer, down to 100, for rows whose runs would take more than {bench['max_seconds']} s; "
                f"each row's numbers in its 'bench'), more until its p90 moves < {bench['stable_rel_change']:.0%} or {bench['max_seconds']} s pass; "
                f"the rows take turns within a round in an order shuffled per round (seed 0), so drift on this shared 2-core VM "
                f"hits all rows alike; p50/p90 over all rounds' samples pooled, and the median over rounds of each round's p90 (robust to the "
                f"rounds a neighbour's load hit). Accuracy: top-1 on the test split "
                f"({len(b.ctx.eval_feeds)} samples) through the same model/session. Threads: each row's own default on this host, "
                f"stated per row (torch: torch.get_num_threads(); ORT: its intra-op pool, counted in /proc/self/task as the worker threads the "
                f"session started + the calling thread)."),
        "host": host_info(), "load_average_1min": load,
        "host_note": (f"AVX2 {'yes' if 'avx2' in flags else 'no'}, AVX-512F {'yes' if 'avx512f' in flags else 'no'}, "
                      f"AVX-512 VNNI {'yes' if 'avx512_vnni' in flags else 'no'} (/proc/cpuinfo); the avx512_vnni preset's model "
                      "still runs here: it is plain ONNX QDQ (u8 activations, s8 weights), run by ORT's AVX2 U8S8 kernels"),
        "toolchain": versions(TOOLS),
        "project": {"name": b.ctx.project.name, "file": str(b.ctx.project_file.path), "via": b.ctx.project_file.via},
        "target": b.target, "profile": b.ctx.profile_file.name, "engine": engine_text, "engine_json": engine,
        "calibration_samples": calib_count, "optimum_recipe": optimum_recipe, "bench": bench,
        "quantize_accuracy_drop_pt": drop, "rows": rows, "variants": variants,
        "profile_how": (f"ONNX Runtime profiler (SessionOptions.enable_profiling) in a second session with the row's settings, "
                        f"{args.profile_runs} runs at batch 1 after one warm-up: per node the median kernel time, summed per op type "
                        "(edgekd.perf.scenarios.top_ops; profiling adds overhead, the shares are the point)"),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(result, indent=1))
    render(name)


def render(name: str) -> None:
    """Compute the comparisons from NAME.json's measured rows and (re)write NAME.json and NAME.md,
    with the hand-written NAME_findings.md (a reading of that run, if present) as the last section."""
    result = json.loads((RESULTS / f"{name}.json").read_text())
    rows, variants = result["rows"], result["variants"]
    result["comparison"] = comparison(rows, variants)
    if variants and "quantize_accuracy_drop_pt" in result:
        result["analysis"] = analysis(rows, variants, result["quantize_accuracy_drop_pt"], result["engine_json"].get("source_model", "student_int8.onnx"))
    findings = RESULTS / f"{name}_findings.md"
    if findings.is_file():
        result["findings"] = findings.read_text().strip().splitlines()
    atomic_write_text(RESULTS / f"{name}.json", json.dumps(result, indent=1))
    atomic_write_text(RESULTS / f"{name}.md", markdown(result) + "\n")
    print(markdown(result))
