"""Distillation of a BERT teacher on real text: WordNet 3.0's glosses -> their supersense (45
classes; `python -m edgekd.examples.wordnet prepare`: 94,135 train / 5,879 calib / 17,645 test
synsets, split by synset with seed 0), through the real `edgekd build` pipeline for the x86 target.
Teacher and students are transformers BertForSequenceClassification models built from configs and
trained here (random init, WordPiece tokenizer trained on the train split). Methods, each the same
objective mix over the same student unless said:

- `scratch`: the student (BERT H32, 2 layers) on the labels alone (CE);
- `kd`: Hinton KD (T 4, alpha 0.9);
- `kd_hidden_attention`: Hinton KD + TinyBERT's hidden-state MSE (embeddings and both layers, learned
  projections 32 -> 128) + MiniLM's attention KL (both layers, 2 relation heads);
- `distilbert_init`: a student with the teacher's width and half its layers (H128, 1 layer) started
  from the teacher's weights (DistilBERT-style), then Hinton KD; it has only ~2x fewer MACs;
- `cross_input`: the student reads only the gloss's first SHORT_TOKENS tokens; its teacher read the
  synset's words and the whole gloss (`full`, 32 tokens) in training and teaching; Hinton KD;
- `scratch_short`: the baseline of `cross_input`: the same short view, labels alone (its project names
  the same teacher view, so the two share one teacher; the student never reads it).

Each row's accuracy is the torch student on the 17,645 test glosses, `int8_accuracy` the INT8 model
(ONNX Runtime, x86), `engine_accuracy` the engine the x86 tuner chose (and its variant) and
`x86_p90_ms` that engine's batch-1 p90 on this host. The teachers are trained once per view (the
stage cache keeps them). Writes benchmarks/results/distill_wordnet.{json,md}; the JSON has the shape
of distill_fashion_mnist.json. Hyperparameters were fixed before any run (not tuned on test).

    python benchmarks/distill_wordnet.py [--seeds N] [--methods a,b] [--workdir DIR] [--max-per-class N]

Needs `apt-get install wordnet-base`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from distill_fashion_mnist import PROFILE, _engine_cell, row_of  # the same no-budget profile, one row per build

import edgekd
from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import host_info, versions
from edgekd.examples import wordnet

RESULTS = Path(__file__).parent / "results"
STEM = "distill_wordnet"
TEACHER = {"model_type": "bert", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 512,
           "max_position_embeddings": 32}
STUDENT = {"base": "teacher", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
WIDE_STUDENT = {"base": "teacher", "num_hidden_layers": 1, "init": "teacher"}
SHORT_TOKENS = 8
HINTON = '{ name = "hinton", params = { temperature = 4.0, alpha = 0.9 } }'
LAYERS = [("bert.embeddings", "bert.embeddings"), ("bert.encoder.layer.0", "bert.encoder.layer.0"),
          ("bert.encoder.layer.1", "bert.encoder.layer.1")]
ATTENTION = [(f"bert.encoder.layer.{i}.attention.self", f"bert.encoder.layer.{i}.attention.self") for i in (0, 1)]
METHODS = {
    "scratch": '[{ name = "ce" }]',
    "kd": f"[{HINTON}]",
    "kd_hidden_attention": (f'[{HINTON}, {{ name = "hidden_mse", params = {{ pairs = {json.dumps([list(p) for p in LAYERS])} }} }}, '
                            f'{{ name = "attention_kl", params = {{ heads = 2, pairs = {json.dumps([list(p) for p in ATTENTION])} }} }}]'),
    "distilbert_init": f"[{HINTON}]",
    "cross_input": f"[{HINTON}]",
    "scratch_short": '[{ name = "ce" }]',
}
DEFAULT = {"seeds": 1, "epochs": 3, "teacher_epochs": 2}
LR, TEACHER_LR, WARMUP, BATCH = 0.002, 0.001, 0.1, 32


def _table(values: dict) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())


def project_toml(method: str, seed: int, args: argparse.Namespace) -> str:
    """The WordNet project of `wordnet.prepare` with this method's student, objective and views."""
    student = WIDE_STUDENT if method == "distilbert_init" else STUDENT
    short = method in ("cross_input", "scratch_short")
    # both short-view methods name the teacher's view, so they share one teacher (the stage cache's)
    view = (f'text_column = "text"\nmax_length = {SHORT_TOKENS}\nteacher_text_column = "full"\nteacher_max_length = 32\n'
            if short else "max_length = 32\n")
    labels = ", ".join(json.dumps(name) for name in wordnet.LEXNAMES)
    return f"""name = "wordnet-{method}"
[teacher.hf]
{_table(TEACHER)}
[teacher.train]
epochs = {args.teacher_epochs}
lr = {TEACHER_LR}
warmup_ratio = {WARMUP}
batch_size = {BATCH}
seed = 0
[student.hf]
{_table(student)}
[data]
files = {{ train = "train.jsonl", calib = "calib.jsonl", test = "test.jsonl" }}
tokenizer = "tokenizer.json"
label_column = "label"
labels = [{labels}]
{view}[task]
kind = "text-classification"
[distill]
losses = {METHODS[method]}
epochs = {args.epochs}
lr = {LR}
warmup_ratio = {WARMUP}
batch_size = {BATCH}
seed = {seed}
[quantize]
calibration_samples = 512
"""


def summarize(runs: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        rows = [r for r in runs if r["method"] == method]
        if rows:
            acc, int8 = [r["accuracy"] for r in rows], [r["int8_accuracy"] for r in rows]
            out[method] = {"seeds": len(rows), "accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                           "int8_accuracy_mean": statistics.mean(int8), "int8_accuracy_std": statistics.stdev(int8) if len(int8) > 1 else 0.0,
                           "teacher_accuracy": rows[0]["teacher_accuracy"], "macs": rows[0]["macs"]}
    return out


def goals(teacher: dict, summary: dict) -> dict:
    kd, scratch = (summary.get(k, {}).get("accuracy_mean") for k in ("kd", "scratch"))
    small = {m: s for m, s in summary.items() if teacher["macs"] >= 10 * s["macs"] and m not in ("cross_input", "scratch_short")}
    best = max(small, key=lambda m: small[m]["int8_accuracy_mean"], default=None)
    gap = None if best is None else teacher["accuracy"] - small[best]["int8_accuracy_mean"]
    return {"kd_minus_scratch_pt": None if kd is None or scratch is None else kd - scratch,
            "kd_at_least_1pt_over_scratch": None if kd is None or scratch is None else kd - scratch >= 1.0,
            "best_int8_at_10x_fewer_macs": best, "teacher_minus_that_int8_pt": gap,
            "int8_within_2pt_of_teacher_at_10x_fewer_macs": None if gap is None else gap <= 2.0}


def write(result: dict, final: bool) -> None:
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / f"{result['stem']}.json", json.dumps(result, indent=1))
    t = result["teacher"]
    lines = [f"# Distillation on WordNet supersenses ({result['mode']})", "", result["what"], "",
             f"Teacher (gloss view): BERT {TEACHER}, {t['params']:,} params, {t['macs']:,} MACs, test accuracy {t['accuracy']:.2f}% "
             "(torch, measured). The cross_input row's teacher reads `full` (words + gloss): its accuracy is in that row.", "",
             "| method | seeds | accuracy (torch) | INT8 model accuracy | engine accuracy (variant chosen) | teacher accuracy (its view) | params | MACs | x86 engine p90 (median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, row in result["summary"].items():
        runs = [r for r in result["runs"] if r["method"] == method]
        lines.append(f"| {method} | {row['seeds']} | {row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} % | "
                     f"{row['int8_accuracy_mean']:.2f} ± {row['int8_accuracy_std']:.2f} % | {_engine_cell(runs)} | {row['teacher_accuracy']:.2f} % | "
                     f"{runs[0]['params']:,} | {runs[0]['macs']:,} | {statistics.median(r['x86_p90_ms'] for r in runs):.4f} ms |")
    lines += ["", "Goals (issue 14): " + "; ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in result["goals"].items()),
              "", "How: " + result["how"]]
    atomic_write_text(RESULTS / f"{result['stem']}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout if final else sys.stderr)


def result_of(args: argparse.Namespace, runs: list[dict], planned: int, wall: float, load_before: float) -> dict:
    base = next((r for r in runs if r["method"] not in ("cross_input", "scratch_short")), runs[0])
    teacher = {"accuracy": base["teacher_accuracy"], "macs": base["teacher_macs"], "params": base["teacher_params"]}
    summary = summarize(runs)
    mode = f"{args.seeds} seed(s), {args.teacher_epochs} teacher + {args.epochs} student epochs" + (
        f", at most {args.max_per_class} synsets a class" if args.max_per_class else ", all synsets")
    return {
        "stem": args.stem, "mode": mode if len(runs) == planned else f"{mode}; PARTIAL: {len(runs)} of {planned} builds done",
        "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "how": (f"measured on this host ({host_info()['cpu']}, {host_info()['cores']} cores); accuracy in percent on the test split "
                f"({'all' if not args.max_per_class else 'capped'} synsets); lr {LR} (teacher {TEACHER_LR}), warm-up {WARMUP}, batch {BATCH}, "
                f"seeds 0..{args.seeds - 1}; toolchain {versions(('torch', 'transformers', 'onnxruntime'))}; wall time {wall / 60:.1f} min "
                f"for {len(runs)} builds, 1-minute load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end"),
        "wall_seconds": wall,
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "max_per_class": args.max_per_class,
                     "teacher": TEACHER, "student": STUDENT, "wide_student": WIDE_STUDENT, "short_tokens": SHORT_TOKENS, "methods": METHODS},
        "teacher": teacher, "runs": runs, "summary": summary, "goals": goals(teacher, summary),
    }


def run_one(work: Path, method: str, seed: int, args: argparse.Namespace) -> dict:
    project = work / "data" / f"{method}-{seed}.toml"
    project.write_text(project_toml(method, seed, args))
    start = time.perf_counter()
    result = edgekd.build(target="x86", profile=str(work / "bench-profile.toml"), project=project,
                          out=work / f"build-{method}-{seed}", cache_dir=work / "cache", log=lambda line: print(line, file=sys.stderr))
    return {**row_of(result.report, method, seed), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=DEFAULT["seeds"])
    parser.add_argument("--epochs", type=int, default=DEFAULT["epochs"], help="student epochs")
    parser.add_argument("--teacher-epochs", type=int, default=DEFAULT["teacher_epochs"])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-per-class", type=int, default=None, help="smaller data for a quick run")
    parser.add_argument("--workdir", type=Path, help="keep data, builds and the stage cache here (default: a temp dir)")
    parser.add_argument("--stem", default=STEM, help=f"results file name (default {STEM}; e.g. a run of more seeds of some methods)")
    args = parser.parse_args()
    load_before, wall_start = os.getloadavg()[0], time.perf_counter()
    plan = [(method, seed) for seed in range(args.seeds) for method in args.methods.split(",")]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-wordnet-") as tmp:
        work = args.workdir or Path(tmp)
        if not (work / "data" / "train.jsonl").exists():
            wordnet.prepare(work / "data", seed=0, max_per_class=args.max_per_class)
        (work / "bench-profile.toml").write_text(PROFILE)
        for method, seed in plan:  # results after every build: a run cut short keeps what it measured
            runs.append(run_one(work, method, seed, args))
            write(result_of(args, runs, len(plan), time.perf_counter() - wall_start, load_before), final=len(runs) == len(plan))


if __name__ == "__main__":
    main()
