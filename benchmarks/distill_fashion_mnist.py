"""Distillation on real data: Fashion-MNIST (60k train / 10k test), the same student trained from
scratch, with Hinton KD, with DKD, and with a feature loss (FitNet hint + KD), through the real
`edgekd build` pipeline for the x86 target: each row's accuracy is the torch student on the 10k
test images, `int8_accuracy` the INT8 engine (ONNX Runtime, x86) on the same images, and
`x86_p90_ms` the engine's batch-1 p90 measured on this host. The teacher is trained once (the stage
cache keeps it for every run). Writes benchmarks/results/distill_fashion_mnist.{json,md}.

    python benchmarks/distill_fashion_mnist.py            # default: 3 seeds, 6+6 epochs (not yet timed on a quiet host)
    python benchmarks/distill_fashion_mnist.py --quick    # CI smoke: small subsets, 1 seed, few epochs

Needs `apt-get install dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist/).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import edgekd
from edgekd.toolchain import host_info, versions

RESULTS = Path(__file__).parent / "results"
TEACHER = {"factory": "edgekd.distill.students:plain_cnn", "args": {"input_shape": [1, 28, 28], "num_classes": 10, "width": 1.0}}
STUDENT = {"factory": "edgekd.distill.students:plain_cnn", "args": {"input_shape": [1, 28, 28], "num_classes": 10, "width": 0.25}}
METHODS = {  # the same student, four objectives (edgekd.distill.losses)
    "scratch": '[{ name = "ce" }]',
    "kd": '[{ name = "hinton", params = { temperature = 4.0, alpha = 0.9 } }]',
    "dkd": '[{ name = "ce" }, { name = "dkd", params = { alpha = 1.0, beta = 8.0, temperature = 4.0 } }]',
    "feature": '[{ name = "hinton", params = { temperature = 4.0, alpha = 0.9 } }, '
               '{ name = "fitnet", weight = 1.0, params = { student_layer = "12", teacher_layer = "12" } }]',
}


def _toml_args(args: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }"


def project_toml(method: str, seed: int, teacher_epochs: int, epochs: int, data_args: dict) -> str:
    return f'''name = "fashion-mnist-{method}"
[teacher]
factory = "{TEACHER['factory']}"
args = {_toml_args(TEACHER['args'])}
[teacher.train]
epochs = {teacher_epochs}
lr = 0.002
batch_size = 128
seed = 0
[student]
factory = "{STUDENT['factory']}"
args = {_toml_args(STUDENT['args'])}
[data]
factory = "edgekd.examples.fashion_mnist:load"
args = {_toml_args(data_args)}
[distill]
losses = {METHODS[method]}
epochs = {epochs}
lr = 0.004
batch_size = 128
seed = {seed}
[quantize]
calibrate_method = "percentile"
calibration_samples = 512
'''


PROFILE = '''description = "benchmark: no budgets that could stop a run; a short latency measurement"
[budgets]
export_parity_max_abs_diff = 1e-3
[recipe.bench]
warmup_runs = 50
min_runs = 300
max_seconds = 5.0
'''


def run_one(work: Path, method: str, seed: int, args: argparse.Namespace, data_args: dict) -> dict:
    project = work / f"{method}-{seed}.toml"
    project.write_text(project_toml(method, seed, args.teacher_epochs, args.epochs, data_args))
    start = time.perf_counter()
    result = edgekd.build(target="x86", profile=str(work / "bench-profile.toml"), project=project,
                          out=work / f"build-{method}-{seed}", cache_dir=work / "cache", log=lambda line: print(line, file=sys.stderr))
    m = {k: v for s in result.report["stages"] for k, v in s["metrics"].items()}
    return {"method": method, "seed": seed, "accuracy": m["student.accuracy"]["value"], "int8_accuracy": m["engine.accuracy"]["value"],
            "macs": m["student.macs"]["value"], "params": m["student.params"]["value"], "x86_p90_ms": m["latency.p90_ms"]["value"],
            "teacher_accuracy": m["teacher.accuracy"]["value"], "teacher_macs": m["teacher.macs"]["value"],
            "teacher_params": m["teacher.params"]["value"], "seconds": time.perf_counter() - start}


def summarize(runs: list[dict]) -> dict:
    out = {}
    for method in METHODS:
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        acc, int8 = [r["accuracy"] for r in rows], [r["int8_accuracy"] for r in rows]
        out[method] = {"seeds": len(rows), "accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                       "int8_accuracy_mean": statistics.mean(int8), "int8_accuracy_std": statistics.stdev(int8) if len(int8) > 1 else 0.0}
    return out


def goals(teacher: dict, summary: dict, student_macs: int) -> dict:
    kd, scratch, dkd = (summary.get(k, {}).get("accuracy_mean") for k in ("kd", "scratch", "dkd"))
    best_int8 = max((s["int8_accuracy_mean"] for s in summary.values()), default=None)
    return {
        "kd_minus_scratch_pt": None if kd is None or scratch is None else kd - scratch,
        "kd_at_least_1pt_over_scratch": None if kd is None or scratch is None else kd - scratch >= 1.0,
        "dkd_at_least_kd": None if dkd is None or kd is None else dkd >= kd,
        "best_int8_within_1pt_of_teacher": None if best_int8 is None else teacher["accuracy"] - best_int8 <= 1.0,
        "macs_ratio_teacher_over_student": teacher["macs"] / student_macs,
    }


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distill_fashion_mnist.json").write_text(json.dumps(result, indent=1))
    t, s, g = result["teacher"], result["summary"], result["goals"]
    lines = [f"# Distillation on Fashion-MNIST ({result['mode']})", "", result["what"], "",
             f"Teacher: {TEACHER['factory']}{TEACHER['args']}, {t['params']:,} params, {t['macs']:,} MACs, "
             f"test accuracy {t['accuracy']:.2f}% (torch, measured).", "",
             "| method | seeds | accuracy (torch) | INT8 engine accuracy | params | MACs | x86 p90 (median over seeds) |",
             "|---|---|---|---|---|---|---|"]
    for method, row in s.items():
        runs = [r for r in result["runs"] if r["method"] == method]
        p90 = statistics.median(r["x86_p90_ms"] for r in runs)
        lines.append(f"| {method} | {row['seeds']} | {row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} % | "
                     f"{row['int8_accuracy_mean']:.2f} ± {row['int8_accuracy_std']:.2f} % | {runs[0]['params']:,} | {runs[0]['macs']:,} | {p90:.4f} ms |")
    lines += ["", "Goals (issue 4): " + "; ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in g.items()), "",
              "How: " + result["how"]]
    (RESULTS / "distill_fashion_mnist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 6k train / 2k test images, 1 seed, 2 epochs")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; --quick: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default 6; --quick: 2)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default 6; --quick: 2)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--workdir", type=Path, help="keep builds and the stage cache here (default: a temp dir)")
    args = parser.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    # measured on the shared 2-core VM (busy): ~160 s per teacher epoch, ~70 s per student epoch over 59k images
    args.epochs = args.epochs or (2 if args.quick else 6)
    args.teacher_epochs = args.teacher_epochs or (2 if args.quick else 6)
    data_args = {"train_size": 6000, "test_size": 2000} if args.quick else {}
    with tempfile.TemporaryDirectory(prefix="edgekd-fmnist-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "bench-profile.toml").write_text(PROFILE)
        runs = [run_one(work, method, seed, args, data_args)
                for seed in range(args.seeds) for method in args.methods.split(",")]
    first = runs[0]
    teacher = {"accuracy": first["teacher_accuracy"], "macs": first["teacher_macs"], "params": first["teacher_params"]}
    summary = summarize(runs)
    result = {
        "mode": "quick" if args.quick else ("default" if (args.seeds, args.epochs, args.teacher_epochs) == (3, 6, 6) else
                                             f"custom: {args.seeds} seed(s), {args.teacher_epochs} teacher + {args.epochs} student epochs"), "what": __doc__.split("\n\n")[0].replace("\n", " "),
        "how": (f"measured on this host ({host_info()['cpu']}, {host_info()['cores']} cores); accuracy in percent on "
                f"{'2,000 seeded test images' if args.quick else 'the 10,000 test images'}; student {args.epochs} epochs, "
                f"teacher {args.teacher_epochs} epochs, seeds 0..{args.seeds - 1}; toolchain {versions(('torch', 'onnxruntime'))}"),
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "data": data_args,
                     "teacher": TEACHER, "student": STUDENT, "methods": METHODS},
        "teacher": teacher, "runs": runs, "summary": summary, "goals": goals(teacher, summary, first["macs"]),
    }
    write(result)


if __name__ == "__main__":
    main()
