"""Distillation on real data: Fashion-MNIST (60k train / 10k test), the same student trained from
scratch, with Hinton KD, with DKD, and with a feature loss (FitNet hint + KD), through the real
`edgekd build` pipeline for the x86 target: each row's accuracy is the torch student on the 10k
test images, `int8_accuracy` the INT8 model (ONNX Runtime, x86) on the same images,
`engine_accuracy` the engine the x86 tuner chose (`engine_variant`: fp32 or int8, whichever measured
faster within the budgets) and `x86_p90_ms` that engine's batch-1 p90 measured on this host. The teacher is trained once (the stage
cache keeps it for every run). Writes benchmarks/results/distill_fashion_mnist.{json,md}.

    python benchmarks/distill_fashion_mnist.py            # default: 3 seeds x 4 methods, 8 teacher + 10 student epochs
    python benchmarks/distill_fashion_mnist.py --quick    # CI smoke: 6k/2k-image subsets, 1 seed, 2 + 2 epochs
    python benchmarks/distill_fashion_mnist.py --augment  # function matching: scratch vs KD, both with [data] augment

With `--augment` the project names augmentations of the train split (AUGMENT: random crop with 2-pixel
padding and horizontal flips; fixed before any run, not tuned) for the teacher's training and the
students': the scratch student trains on augmented batches, and the KD student's teacher runs on the
same augmented view every step (function matching, Beyer et al. 2022; the teacher-logit cache is
bypassed). Writes benchmarks/results/distill_fashion_mnist_fm.{json,md}.

The pair: teacher plain_cnn width 2.0 (29.1 MMAC, 288k params), student plain_cnn width 0.5 (1.86
MMAC, 18.5k params: 15.6x fewer MACs). The student's learning rate (0.008), KD's temperature and alpha
(T 4, alpha 0.9) and DKD's (CE + DKD alpha 1, beta 2, T 4, one warm-up epoch) were chosen on a
5,000-image validation split held out of the training images, never on the test set (but with a
teacher that had seen those images; re-run with one that had not, KD and DKD gain nothing there
either: see the select results):
benchmarks/distill_fashion_mnist_select.py and results/distill_fashion_mnist_select.md. Earlier
settings (teacher width 1.0, student width 0.25 at 0.48 MMAC, 3 epochs) are in
results/distill_fashion_mnist_w025.md: that student was too small to come near the teacher.

The results files are rewritten after every build (marked PARTIAL until the last), and `--workdir`
keeps the stage cache, so a run cut short can be resumed: finished builds come back from the cache.
Measured on this 2-core VM with nothing else running (results file, 'seconds' per build): 45.5 min
in all; the teacher build 12.5 min (8 epochs), every student build 2.5-3.5 min. The feature method's
teacher features (FitNet at layer 13, 706 MB) come from edgekd's teacher-feature cache, as the
teacher's logits come from the teacher-logit cache; with the teacher run every step a feature build
took 10-12 min. Other work on the cores slows all of it (a shared run took 90 min).

Needs `apt-get install dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist/).
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

import edgekd
from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import host_info, versions

RESULTS = Path(__file__).parent / "results"
DEFAULT = {"seeds": 3, "epochs": 10, "teacher_epochs": 8}
QUICK = {"seeds": 1, "epochs": 2, "teacher_epochs": 2}
TEACHER = {"factory": "edgekd.distill.students:plain_cnn", "args": {"input_shape": [1, 28, 28], "num_classes": 10, "width": 2.0}}
STUDENT = {"factory": "edgekd.distill.students:plain_cnn", "args": {"input_shape": [1, 28, 28], "num_classes": 10, "width": 0.5}}
TEACHER_LR, STUDENT_LR = 0.002, 0.008
FM_WHAT = ("Function matching on Fashion-MNIST (60k train / 10k test) through the real `edgekd build` pipeline for the x86 target: "
           "the same student trained from scratch (CE) and with Hinton KD, both on augmented batches ([data] augment: random crop "
           "with 2-pixel padding, horizontal flips; the teacher is trained with them too); the KD student's teacher runs on the same "
           "augmented view every step (Beyer et al. 2022), so no teacher-logit cache. Accuracy: the torch student on the test images; "
           "INT8: the quantized model on the same images; engine: the variant the x86 tuner chose (fp32 or int8) and its batch-1 p90 on this host. "
           "Writes benchmarks/results/distill_fashion_mnist_fm.{json,md}.")
AUGMENT = '[{ name = "random_crop", params = { padding = 2 } }, { name = "hflip" }]'  # --augment (fixed a priori)
METHODS = {  # the same student, four objectives (edgekd.distill.losses), chosen on a validation split (see the docstring)
    "scratch": '[{ name = "ce" }]',
    "kd": '[{ name = "hinton", params = { temperature = 4.0, alpha = 0.9 } }]',
    "dkd": '[{ name = "ce" }, { name = "dkd", params = { alpha = 1.0, beta = 2.0, temperature = 4.0, warmup_epochs = 1.0 } }]',
    "feature": '[{ name = "hinton", params = { temperature = 4.0, alpha = 0.9 } }, '
               '{ name = "fitnet", weight = 1.0, params = { student_layer = "13", teacher_layer = "13" } }]',
}


def _toml_args(args: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items()) + " }"


def project_toml(method: str, seed: int, teacher_epochs: int, epochs: int, data_args: dict, augment: str | None = None) -> str:
    return f'''name = "fashion-mnist-{method}"
[teacher]
factory = "{TEACHER['factory']}"
args = {_toml_args(TEACHER['args'])}
[teacher.train]
epochs = {teacher_epochs}
lr = {TEACHER_LR}
batch_size = 128
seed = 0
[student]
factory = "{STUDENT['factory']}"
args = {_toml_args(STUDENT['args'])}
[data]
factory = "edgekd.examples.fashion_mnist:load"
args = {_toml_args(data_args)}
{"augment = " + augment if augment else ""}
[distill]
losses = {METHODS[method]}
epochs = {epochs}
lr = {STUDENT_LR}
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
    project.write_text(project_toml(method, seed, args.teacher_epochs, args.epochs, data_args, AUGMENT if args.augment else None))
    start = time.perf_counter()
    result = edgekd.build(target="x86", profile=str(work / "bench-profile.toml"), project=project,
                          out=work / f"build-{method}-{seed}", cache_dir=work / "cache", log=lambda line: print(line, file=sys.stderr))
    return {**row_of(result.report, method, seed), "seconds": time.perf_counter() - start}


def row_of(report: dict, method: str, seed: int) -> dict:
    """One build's numbers from its report.json."""
    m = {k: v for s in report["stages"] for k, v in s["metrics"].items()}
    tuning = report.get("tuning") or {}
    variant = tuning["rows"][tuning["chosen"]]["variant"] if tuning.get("rows") else None
    return {"method": method, "seed": seed, "accuracy": m["student.accuracy"]["value"], "int8_accuracy": m["int8.accuracy"]["value"],
            "engine_accuracy": m["engine.accuracy"]["value"], "engine_variant": variant,
            "macs": m["student.macs"]["value"], "params": m["student.params"]["value"], "x86_p90_ms": m["latency.p90_ms"]["value"],
            "teacher_accuracy": m["teacher.accuracy"]["value"], "teacher_macs": m["teacher.macs"]["value"],
            "teacher_params": m["teacher.params"]["value"]}


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
        "teacher_minus_best_int8_pt": None if best_int8 is None else teacher["accuracy"] - best_int8,
        "best_int8_within_1pt_of_teacher": None if best_int8 is None else teacher["accuracy"] - best_int8 <= 1.0,
        "macs_ratio_teacher_over_student": teacher["macs"] / student_macs,
    }


def _engine_cell(runs: list[dict]) -> str:
    if "engine_accuracy" not in runs[0]:  # results written before the engine was told apart from the INT8 model
        return "n/a"
    acc = [r["engine_accuracy"] for r in runs]
    spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
    return f"{statistics.mean(acc):.2f} ± {spread:.2f} % ({', '.join(sorted({str(r['engine_variant']) for r in runs}))})"


def write(result: dict, final: bool = True) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = result["stem"]
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(result, indent=1))
    t, s, g = result["teacher"], result["summary"], result["goals"]
    lines = [f"# Distillation on Fashion-MNIST ({result['mode']})", "", result["what"], "",
             f"Teacher: {TEACHER['factory']}{TEACHER['args']}, {t['params']:,} params, {t['macs']:,} MACs, "
             f"test accuracy {t['accuracy']:.2f}% (torch, measured).", "",
             "| method | seeds | accuracy (torch) | INT8 model accuracy | engine accuracy (variant chosen) | params | MACs | x86 engine p90 (median over seeds) |",
             "|---|---|---|---|---|---|---|---|"]
    for method, row in s.items():
        runs = [r for r in result["runs"] if r["method"] == method]
        p90 = statistics.median(r["x86_p90_ms"] for r in runs)
        lines.append(f"| {method} | {row['seeds']} | {row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f} % | "
                     f"{row['int8_accuracy_mean']:.2f} ± {row['int8_accuracy_std']:.2f} % | {_engine_cell(runs)} | "
                     f"{runs[0]['params']:,} | {runs[0]['macs']:,} | {p90:.4f} ms |")
    lines += ["", "Goals (issue 4): " + "; ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in g.items()), "",
              "How: " + result["how"]]
    atomic_write_text(RESULTS / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout if final else sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: 6k train / 2k test images, 1 seed, 2+2 epochs")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per method (default {DEFAULT['seeds']}; --quick: {QUICK['seeds']})")
    parser.add_argument("--epochs", type=int, default=None, help=f"student epochs (default {DEFAULT['epochs']}; --quick: {QUICK['epochs']})")
    parser.add_argument("--teacher-epochs", type=int, default=None, help=f"teacher epochs (default {DEFAULT['teacher_epochs']}; --quick: {QUICK['teacher_epochs']})")
    parser.add_argument("--methods", default=None, help="default: all four; with --augment: scratch,kd")
    parser.add_argument("--augment", action="store_true", help="function matching: [data] augment (AUGMENT) for teacher and students")
    parser.add_argument("--workdir", type=Path, help="keep builds and the stage cache here (default: a temp dir)")
    parser.add_argument("--reread", action="store_true", help="rewrite the results from the build folders in --workdir, running "
                        "nothing: each build's report.json; build seconds and the How line kept from the results file")
    args = parser.parse_args()
    base = QUICK if args.quick else DEFAULT
    args.seeds, args.epochs, args.teacher_epochs = (getattr(args, k) or base[k] for k in ("seeds", "epochs", "teacher_epochs"))
    load_before, wall_start = os.getloadavg()[0], time.perf_counter()
    data_args = {"train_size": 6000, "test_size": 2000} if args.quick else {}
    args.methods = args.methods or ("scratch,kd" if args.augment else ",".join(METHODS))
    plan = [(method, seed) for seed in range(args.seeds) for method in args.methods.split(",")]
    if args.reread:
        return reread(args, plan, data_args)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-fmnist-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        (work / "bench-profile.toml").write_text(PROFILE)
        for method, seed in plan:  # results written after every build: a run cut short keeps what it measured
            runs.append(run_one(work, method, seed, args, data_args))
            write(result_of(args, runs, len(plan), data_args, time.perf_counter() - wall_start, load_before), final=len(runs) == len(plan))


def reread(args: argparse.Namespace, plan: list[tuple[str, int]], data_args: dict) -> None:
    """The results again from the finished builds of `plan` in --workdir (their report.json files)."""
    if args.workdir is None:
        raise SystemExit("--reread needs --workdir (the folder the builds were written to)")
    stem = "distill_fashion_mnist_fm" if args.augment else "distill_fashion_mnist"
    old = json.loads((RESULTS / f"{stem}.json").read_text())
    seconds = {(r["method"], r["seed"]): r.get("seconds") for r in old["runs"]}
    runs = [{**row_of(json.loads((args.workdir / f"build-{m}-{s}" / "report.json").read_text()), m, s), "seconds": seconds.get((m, s))}
            for m, s in plan]
    result = result_of(args, runs, len(plan), data_args, old["wall_seconds"], 0.0)
    result["how"] = old["how"] + (f"; numbers re-read from the {len(runs)} builds' report.json (--reread, "
                                  f"{time.strftime('%Y-%m-%d')}), the INT8 model told apart from the engine the tuner chose")
    write(result)


def result_of(args: argparse.Namespace, runs: list[dict], planned: int, data_args: dict, wall: float, load_before: float) -> dict:
    first = runs[0]
    teacher = {"accuracy": first["teacher_accuracy"], "macs": first["teacher_macs"], "params": first["teacher_params"]}
    summary = summarize(runs)
    mode = "quick" if args.quick else ("default" if {k: getattr(args, k) for k in DEFAULT} == DEFAULT else
                                       f"custom: {args.seeds} seed(s), {args.teacher_epochs} teacher + {args.epochs} student epochs")
    if args.augment:
        mode += f"; augmented ({AUGMENT}): function matching"
    return {
        "stem": "distill_fashion_mnist_fm" if args.augment else "distill_fashion_mnist",
        "mode": mode if len(runs) == planned else f"{mode}; PARTIAL: {len(runs)} of {planned} builds done",
        "what": (FM_WHAT if args.augment else __doc__.split("\n\n")[0].replace("\n", " ")),
        "how": (f"measured on this host ({host_info()['cpu']}, {host_info()['cores']} cores); accuracy in percent on "
                f"{'2,000 seeded test images' if args.quick else 'the 10,000 test images'}; student {args.epochs} epochs, "
                f"teacher {args.teacher_epochs} epochs, seeds 0..{args.seeds - 1}; toolchain {versions(('torch', 'onnxruntime'))}; "
                f"wall time {wall / 60:.1f} min for the {len(runs)} builds, 1-minute load average {load_before:.1f} at the start and "
                f"{os.getloadavg()[0]:.1f} at the end (os.getloadavg; above 2 the 2 cores were shared with other work, "
                f"which slows training and inflates the p90 latencies)"),
        "wall_seconds": wall,
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs, "data": data_args,
                     "augment": AUGMENT if args.augment else None,
                     "teacher": TEACHER, "student": STUDENT, "methods": METHODS},
        "teacher": teacher, "runs": runs, "summary": summary, "goals": goals(teacher, summary, first["macs"]),
    }

if __name__ == "__main__":
    main()
