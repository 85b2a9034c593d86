"""Small decoder LM distillation on real text: the Python 3.11 docs' prose (`python -m
edgekd.examples.pydocs prepare`, a slice of the train pages), through the real `edgekd build`
pipeline for the x86 target. The teacher (Llama, 4 layers, hidden 256) is trained once by an
edgekd build and read by every method from its folder; the student (Llama, 2 layers, hidden 128,
grouped KV heads: ~4.8x fewer parameters) is the same config for every method:

- `scratch`: the student on the text alone (next-token cross-entropy);
- `token_kd`: token-level forward KL to the teacher's next-token distributions (T 1);
- `sequence_kd`: trained only on the teacher's sampled continuations of the train blocks' first
  PROMPT tokens (Kim & Rush 2016; [distill] data = "teacher_generations");
- `on_policy`: GKD (Agarwal et al. 2024): generalized JSD (beta 0.5) on the real text, and on half of
  the batches (lambda 0.5) on the student's own samples scored by the teacher;
- `api` / `api_logprobs`: an API teacher: a JSONL of API_PROMPTS prompts and the teacher's greedy
  responses, written by `python -m edgekd.distill.api_teacher export` from the teacher folder (what
  a remote model's API returns), without and with per-token top-5 log-probabilities (the same
  responses). The student sees only those responses (fewer tokens than the train split).

Each row: the torch student's perplexity on the test pages; from the x86 tuner's rows, the INT4
(MatMulNBits, weight-only) model's perplexity and the decode-step rate (1000 / p50 ms of one decode
step with 128 cached tokens, graph only, interleaved with the other variants) of the fp32 and INT4
variants; from the bench, the chosen engine's greedy decode tokens/s (the whole loop: feeds, argmax)
and its time to first token at the profile's prompt length; all measured on this host by each build. Writes
benchmarks/results/distill_lm.{json,md}. Hyperparameters were fixed before any run.

    python benchmarks/distill_lm.py [--seeds N] [--methods a,b] [--workdir DIR] [--max-chars N]

Needs `apt-get install python3.11-doc`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import host_info, versions

import lm_common
from lm_common import (
    BATCH,
    LR,
    RESULTS,
    STUDENT,
    WARMUP,
    build,
    data_table,
    llama_table,
    metrics_of,
)

STEM = "distill_lm"
PROMPT = 16
API_PROMPTS, API_NEW_TOKENS = 200, 48  # the export steps one token at a time per prompt: ~50 ms a step on this loaded host
GENERATE = f'''[distill.generate]
prompt_tokens = {PROMPT}
max_new_tokens = {lm_common.MAX_LENGTH - PROMPT}
strategy = "sample"
temperature = 1.0
seed = 0
'''
METHODS = {
    "scratch": ('[{ name = "ce" }]', ""),
    "token_kd": ('[{ name = "forward_kl", params = { temperature = 1.0 } }]', ""),
    "sequence_kd": ('[{ name = "ce" }]', f'data = "teacher_generations"\n{GENERATE}'),
    "on_policy": ('[{ name = "gjsd", params = { beta = 0.5 } }]',
                  f"[distill.on_policy]\nlmbda = 0.5\nprompt_tokens = {PROMPT}\nmax_new_tokens = 48\ntemperature = 1.0\n"),
    "api": ('[{ name = "ce" }]', 'data = "teacher_generations"\n'),
    "api_logprobs": ('[{ name = "topk_kd" }]', 'data = "teacher_generations"\n'),
}
DEFAULT = {"seeds": 1, "epochs": 2, "teacher_epochs": 2, "max_chars": 1_500_000, "student_chars": None}


def teacher_table(method: str, work: Path) -> str:
    if method == "api":
        return f'[teacher]\nkind = "api"\nresponses = "{work}/api.jsonl"\n'
    if method == "api_logprobs":
        return f'[teacher]\nkind = "api"\nresponses = "{work}/api_logprobs.jsonl"\n'
    return f'[teacher.hf]\npath = "{work}/teacher"\n'


def project_toml(method: str, seed: int, work: Path, epochs: int) -> str:
    losses, extra = METHODS[method]
    distill = f"""[distill]
losses = {losses}
temperature = 1.0
epochs = {epochs}
lr = {LR}
warmup_ratio = {WARMUP}
batch_size = {BATCH}
seed = {seed}
"""
    head, _, tail = extra.partition("[")  # keys of [distill] itself, then its sub-tables
    return (f'name = "pydocs-{method}"\n{teacher_table(method, work)}[student.hf]\nmodel_type = "llama"\n'
            f"{llama_table(STUDENT)}{data_table()}{distill}{head}{'[' + tail if tail else ''}")


def api_files(work: Path, data: Path) -> None:
    """api_logprobs.jsonl: the teacher's greedy responses to the first six words of the first
    API_PROMPTS train paragraphs with per-token top-5 log-probabilities, as an API gives them;
    api.jsonl: the same responses without the log-probabilities (an API that returns text only)."""
    prompts = work / "api_prompts.txt"
    lines = (data / "train.txt").read_text(encoding="utf-8").splitlines()
    prompts.write_text("".join(" ".join(line.split()[:6]) + "\n" for line in lines[:API_PROMPTS]), encoding="utf-8")
    full, bare = work / "api_logprobs.jsonl", work / "api.jsonl"
    if not full.is_file():
        subprocess.run([sys.executable, "-m", "edgekd.distill.api_teacher", "export", "--model", str(work / "teacher"),
                        "--tokenizer", str(work / "data" / "tokenizer"), "--prompts", str(prompts), "--out", str(full),
                        "--max-new-tokens", str(API_NEW_TOKENS), "--top-logprobs", "5"], check=True)
    records = [json.loads(line) for line in full.read_text(encoding="utf-8").splitlines()]
    bare.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["response"]}, ensure_ascii=False) + "\n"
                            for r in records), encoding="utf-8")


def _value(m: dict, name: str) -> float | None:
    return m[name]["value"] if name in m and m[name].get("value") is not None else None


def _tuned(build_dir: Path) -> dict:
    """From the x86 tuner's rows (engine.json): per precision the variant with the fastest decode step
    (p50 over its session settings) and its perplexity; tokens/s = 1000 / that p50."""
    engine = json.loads((build_dir / "engine.json").read_text()) if (build_dir / "engine.json").is_file() else {}
    best: dict[str, dict] = {}
    for row in (engine.get("tuning") or {}).get("rows", []):
        if row.get("perplexity") is not None and (row["precision"] not in best or row["p50_ms"] < best[row["precision"]]["p50_ms"]):
            best[row["precision"]] = row
    return {p: {"variant": r["variant"], "perplexity": r["perplexity"], "decode_tokens_per_s": 1000.0 / r["p50_ms"]}
            for p, r in best.items()}


def row_of(report: dict, method: str, seed: int, build_dir: Path) -> dict:
    """One build's numbers from its report.json and engine.json (None where the build did not measure one)."""
    m, tuned = metrics_of(report), _tuned(build_dir)
    fp32, int4 = tuned.get("fp32", {}), tuned.get("int4", {})
    return {"method": method, "seed": seed, "perplexity": _value(m, "student.perplexity"),
            "int4_perplexity": int4.get("perplexity"), "int4_variant": int4.get("variant"),
            "engine_perplexity": _value(m, "engine.perplexity"), "params": _value(m, "student.params"),
            "teacher_perplexity": _value(m, "teacher.perplexity"), "teacher_params": _value(m, "teacher.params"),
            "agreement_pct": _value(m, "student.next_token_agreement_pct"),
            "decode_tokens_per_s_fp32": fp32.get("decode_tokens_per_s"), "decode_tokens_per_s_int4": int4.get("decode_tokens_per_s"),
            "decode_tokens_per_s": _value(m, "latency.decode_tokens_per_s"), "ttft_ms": _value(m, "latency.ttft_p90_ms"),
            "peak_memory_mb": _value(m, "latency.peak_rss_mb")}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        values = [r["perplexity"] for r in runs if r["method"] == method and r["perplexity"] is not None]
        if values:
            out[method] = {"seeds": len(values), "perplexity_mean": statistics.mean(values),
                           "perplexity_std": statistics.stdev(values) if len(values) > 1 else 0.0}
    return out


def goals(runs: list[dict], summary: dict) -> dict:
    scratch = summary.get("scratch", {}).get("perplexity_mean")
    distilled = {m: s["perplexity_mean"] for m, s in summary.items() if m != "scratch"}
    best = min(distilled, key=distilled.get, default=None)
    out: dict = {"best_distilled": best}
    if best is None or scratch is None:
        return out
    out["best_vs_scratch_pct"] = 100 * (distilled[best] - scratch) / scratch
    out["at_least_10pct_lower_than_scratch"] = out["best_vs_scratch_pct"] <= -10
    row = next(r for r in runs if r["method"] == best)
    if row["int4_perplexity"] is not None and row["perplexity"]:
        out["int4_vs_own_pct"] = 100 * (row["int4_perplexity"] - row["perplexity"]) / row["perplexity"]
        out["int4_within_5pct"] = out["int4_vs_own_pct"] <= 5
    if row["decode_tokens_per_s_int4"] and row["decode_tokens_per_s_fp32"]:
        out["int4_decode_speedup"] = row["decode_tokens_per_s_int4"] / row["decode_tokens_per_s_fp32"]
        out["int4_at_least_2x_decode"] = out["int4_decode_speedup"] >= 2
    return out


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def write(result: dict, final: bool) -> None:
    lm_common.write_json(RESULTS / f"{result['stem']}.json", result)
    t = result["teacher"]
    lines = [f"# LM distillation on the Python docs' prose ({result['mode']})", "", result["what"], "",
             (f"Teacher: Llama {vars(lm_common.TEACHER)}, {_cell(t['params'], ',')} params, test perplexity "
             f"{_cell(t['perplexity'], '.2f')} (torch, measured)."), "",
             ("| method | seed | perplexity (torch) | INT4 perplexity | engine perplexity | agreement with teacher | params | "
             "decode-step tok/s fp32 | decode-step tok/s INT4 | engine decode tok/s (bench) | TTFT p90 |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['method']} | {r['seed']} | {_cell(r['perplexity'], '.2f')} | {_cell(r['int4_perplexity'], '.2f')} | "
                     f"{_cell(r['engine_perplexity'], '.2f')} | {_cell(r['agreement_pct'], '.1f')} % | {_cell(r['params'], ',')} | "
                     f"{_cell(r['decode_tokens_per_s_fp32'], '.0f')} | {_cell(r['decode_tokens_per_s_int4'], '.0f')} | "
                     f"{_cell(r['decode_tokens_per_s'], '.0f')} | {_cell(r['ttft_ms'], '.2f')} ms |")
    lines += ["", "Summary: " + "; ".join(f"{m}: {s['perplexity_mean']:.2f} ± {s['perplexity_std']:.2f} ({s['seeds']} seed(s))"
                                          for m, s in result["summary"].items()),
              "", "Goals (issue 15): " + "; ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in result["goals"].items()),
              "", "How: " + result["how"]]
    atomic_write_text(RESULTS / f"{result['stem']}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout if final else sys.stderr)


def result_of(args: argparse.Namespace, runs: list[dict], planned: int, wall: float, load_before: float) -> dict:
    base = runs[0] if runs else {}
    teacher = {"perplexity": next((r["teacher_perplexity"] for r in runs if r["teacher_perplexity"]), None),
               "params": base.get("teacher_params")}
    summary = summarize(runs)
    students = "the same text" if args.student_chars is None else f"its first {args.student_chars:,} characters"
    mode = (f"{args.seeds} seed(s), {args.teacher_epochs} teacher + {args.epochs} student epochs, teacher on {args.max_chars:,} "
            f"characters of train text, students on {students}")
    host = host_info()
    return {
        "stem": args.stem, "mode": mode if len(runs) == planned else f"{mode}; PARTIAL: {len(runs)} of {planned} builds done",
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "how": (f"measured on this host ({host['cpu']}, {host['cores']} cores); perplexity on the test pages' blocks of {lm_common.MAX_LENGTH} "
                f"tokens; lr {LR}, warm-up {WARMUP}, batch {BATCH}; toolchain {versions(('torch', 'transformers', 'onnxruntime'))}; wall "
                f"time {wall / 60:.1f} min for {len(runs)} builds, " + (
                    "the sum of their stages' own times (re-read by --collect: the host load while they ran is not recorded here)"
                    if args.collect else f"1-minute load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end")),
        "wall_seconds": wall, "settings": {"seeds": args.seeds, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
                                           "max_chars": args.max_chars, "student_chars": args.student_chars, "student": vars(STUDENT),
                                           "methods": METHODS},
        "teacher": teacher, "runs": runs, "summary": summary, "goals": goals(runs, summary),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT["seeds"])
    parser.add_argument("--first-seed", type=int, default=0, help="build seeds FIRST_SEED .. SEEDS-1 only (another run makes the others)")
    parser.add_argument("--epochs", type=int, default=DEFAULT["epochs"], help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=DEFAULT["teacher_epochs"])
    parser.add_argument("--max-chars", type=int, default=DEFAULT["max_chars"], help="characters of train text")
    parser.add_argument("--student-chars", type=int, default=DEFAULT["student_chars"],
                        help="students train on only the first N characters of the teacher's train text (default: all of it)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, help="keep data, teacher, builds and the stage cache here (default: a temp dir)")
    parser.add_argument("--stem", default=STEM)
    parser.add_argument("--collect", action="store_true", help="build nothing: re-read the builds already in --workdir")
    args = parser.parse_args()
    load_before, start = os.getloadavg()[0], time.perf_counter()
    plan = [(m, s) for s in range(args.first_seed, args.seeds) for m in args.methods.split(",")]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-lm-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        lm_common.prepare_data(work, args.max_chars)
        if not args.collect:
            lm_common.train_teacher(work, args.teacher_epochs)
        data = lm_common.student_data(work, args.student_chars)
        if any(m.startswith("api") for m, _ in plan) and not args.collect:
            api_files(work, data)
        for method, seed in plan:
            project = data / f"{method}-{seed}.toml"
            project.write_text(project_toml(method, seed, work, args.epochs))
            began = time.perf_counter()
            out = work / f"build-{method}-{seed}" if args.student_chars is None else work / f"build-{args.student_chars}-{method}-{seed}"
            if args.collect:  # the numbers of builds made before (this script's earlier run), re-read
                if not (out / "report.json").is_file():
                    continue
                report = json.loads((out / "report.json").read_text())
                seconds = sum(stage.get("seconds") or 0.0 for stage in report["stages"])  # the stages' own times
            else:
                report, seconds = build(work, project, out), time.perf_counter() - began
            runs.append({**row_of(report, method, seed, out), "seconds": seconds})
            write(result_of(args, runs, len(plan), time.perf_counter() - start, load_before), final=False)
    wall = sum(r["seconds"] for r in runs) if args.collect else time.perf_counter() - start
    write(result_of(args, runs, len(plan), wall, load_before), final=True)


if __name__ == "__main__":
    main()
