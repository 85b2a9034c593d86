"""Choosing the Fashion-MNIST benchmark's settings on a validation split, not on the test set.

benchmarks/distill_fashion_mnist.py reports test accuracy for fixed settings (student learning rate,
KD temperature/alpha, DKD alpha/beta/temperature). This script is how those settings were chosen:
5,000 images are held out of the 59,000 training images (seeded, disjoint from the calibration
split) as a validation split; students train on the other 54,000 and are scored on the validation
images only. The teacher is trained on the same 54,000 images (not on the validation images: a
teacher that has fit them passes what it learned from them on to a distilled student, which then
looks better on validation than it is) and supplies cached logits (edgekd's teacher-logit cache does
the same in the pipeline). Training uses edgekd's own trainer (`edgekd.distill.trainer.fit`: AdamW
+ cosine) and its registered losses, not the
pipeline, so it runs two configurations at a time, one torch thread each.

    python benchmarks/distill_fashion_mnist_select.py            # the grid below, appended to results/…_select.jsonl
    python benchmarks/distill_fashion_mnist_select.py --report   # only rewrite the .md from the .jsonl

Needs `apt-get install dataset-fashion-mnist`.

The runs stream the 54,000 images from a SplitsSource (batches shuffled with seed + epoch, as
`fit` draws them) through the image-classification task (forward, loss, KD view, predict). The rows
now in the .jsonl predate that: the trainer then shuffled in-memory arrays with a torch generator, so
a re-run draws other batches (same settings, same images).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.data import Split, Splits

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekd.data.sources import SplitsSource
    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.streaming import TrainData
    from edgekd.distill.trainer import FitPlan

RESULTS = Path(__file__).parent / "results"
JSONL, MD = RESULTS / "distill_fashion_mnist_select.jsonl", RESULTS / "distill_fashion_mnist_select.md"
VAL_SIZE, VAL_SEED = 5000, 123
BATCH_SIZE = 128
TEACHER = {"width": 2.0, "epochs": 8, "lr": 0.002}
STUDENT = {"width": 0.5, "epochs": 10}
HINTON = '[{{"name":"hinton","params":{{"temperature":{t},"alpha":{a}}}}}]'
DKD = '[{{"name":"ce"}},{{"name":"dkd","params":{{"alpha":{a},"beta":{b},"temperature":{t},"warmup_epochs":1}}}}]'
CE = '[{"name":"ce"}]'
# (tag, learning rate, seed, losses, epochs): the order they were run in
GRID = [("scratch", 0.004, 0, CE, 10), ("scratch", 0.008, 0, CE, 10), ("scratch", 0.016, 0, CE, 10),
        ("scratch", 0.008, 1, CE, 10), ("scratch", 0.008, 0, CE, 20), ("scratch", 0.008, 2, CE, 10)]
GRID += [("kd", 0.008, 0, HINTON.format(t=t, a=a), 10) for t, a in ((1, 0.5), (4, 0.9), (2, 0.5), (4, 0.5))]
GRID += [("dkd", 0.008, 0, DKD.format(a=a, b=b, t=t), 10) for a, b, t in ((1, 8, 4), (0.5, 0.5, 1), (1, 2, 4), (1, 2, 2))]
GRID += [("kd", 0.008, 0, HINTON.format(t=4, a=1.0), 10), ("kd", 0.008, 0, HINTON.format(t=8, a=0.9), 10),
         ("kd", 0.008, 0, HINTON.format(t=4, a=0.9), 20)]
GRID += [("dkd", 0.008, 1, DKD.format(a=1, b=2, t=4), 10), ("kd", 0.008, 1, HINTON.format(t=4, a=0.9), 10),
         ("dkd", 0.008, 0, DKD.format(a=1, b=1, t=4), 10)]
GRID += [("kd", 0.008, 2, HINTON.format(t=4, a=0.9), 10), ("dkd", 0.008, 2, DKD.format(a=1, b=2, t=4), 10)]  # 3 seeds each


CHOSEN = ("The benchmark's settings (student lr 0.008; KD = hinton T 4, alpha 0.9; DKD = CE + DKD alpha 1, beta 2, T 4, "
          "1 warm-up epoch; 10 epochs) were chosen on an earlier run of this grid whose teacher had also been trained on "
          "the validation images (in git history before this table): there KD and DKD looked +0.8 pt over scratch. This "
          "table is the same grid (plus seed 2 for KD and DKD) with the teacher trained without them, and it agrees with "
          "the test set (distill_fashion_mnist.md): over 3 seeds scratch 93.39, KD 93.35, DKD 93.37, so neither gains "
          "anything at these settings. The best single-seed rows (KD T 2, alpha 0.5: 93.78; KD at 20 epochs: 93.70 vs "
          "scratch at 20 epochs 93.24; DKD alpha 0.5, beta 0.5, T 1: 93.64) are +0.3 to +0.5 over the seed-0 scratch "
          "93.32, about one standard error of a single run: not evidence without more seeds, and they have not been run "
          "on the test set. lr 0.008 stays the best scratch setting (0.004 and 0.016 lower on seed 0). The feature method "
          "(KD + FitNet) was not tuned here.")
PROVENANCE = ("The 21 rows of the jsonl were produced by this script's ad-hoc predecessor (the same trainer, losses, split "
              "and seeds; its teacher's initial weights were not seeded) with one flaw this script no longer has: its teacher "
              "was trained on all 59,000 images, the validation images included. That favours the distilled students on "
              "validation, and the test-set benchmark did not reproduce the KD gain (see distill_fashion_mnist.md). "
              "Re-run this script (about 45 min: teacher ~15 min, then 22 students two at a time) before tuning again.")


def selection_data(splits: Splits) -> tuple[SplitsSource, np.ndarray, Split]:
    """The 54,000 / 5,000 split: a SplitsSource whose train split is the training images less the
    validation images (its test split is the validation images), the positions of those training
    images in `splits.train`, and the validation images."""
    from edgekd.data.sources import SplitsSource

    order = np.random.default_rng(VAL_SEED).permutation(len(splits.train.y))
    val_idx, train_idx = order[:VAL_SIZE], order[VAL_SIZE:]
    val = Split(splits.train.x[val_idx], splits.train.y[val_idx])
    held_out = Splits(train=Split(splits.train.x[train_idx], splits.train.y[train_idx]), calib=splits.calib, test=val,
                      num_classes=splits.num_classes, description=f"Fashion-MNIST less {len(val_idx)} validation images")
    return SplitsSource(held_out), train_idx, val


def train_data(source: SplitsSource) -> TrainData:
    """The source's train split under the image-classification task, without augmentation."""
    from edgekd.distill.streaming import TrainData
    from edgekd.tasks import get_task

    task = get_task("image-classification", input_shape=source.splits.input_shape, num_classes=source.splits.num_classes)
    return TrainData(source, task)


def train_teacher(model: nn.Module, data: TrainData, plan: FitPlan, all_train_x: np.ndarray) -> np.ndarray:
    """Train `model` with the task's loss on `data` (the validation images are not in it) and
    return its logits on every one of `all_train_x` (the students index them by position)."""
    from edgekd.distill.trainer import fit

    task = data.task
    fit(model, data, plan, lambda batch, _: task.task_loss(task.forward(model, batch), batch))
    return task.predict(model, {task.inputs()[0].name: all_train_x})


def train_student(model: nn.Module, data: TrainData, plan: FitPlan, objective: CombinedLoss, logits: np.ndarray) -> None:
    """Distill into `model` against `logits` (row i: train sample i of `data`, read by batch["index"])."""
    from edgekd.data.sources import INDEX
    from edgekd.distill.losses import LossInputs
    from edgekd.distill.teaching import rows_at
    from edgekd.distill.trainer import Batch, Step, fit

    task = data.task

    def loss(batch: Batch, step: Step) -> torch.Tensor:
        view = task.kd_view(task.forward(model, batch), batch)
        inputs = LossInputs(view, rows_at(logits, batch[INDEX]), task.kd_labels(batch), {}, {}, step.progress)
        return objective(inputs)[0]

    fit(model, data, plan, loss)


def accuracy(data: TrainData, model: nn.Module, split: Split) -> float:
    """Top-1 accuracy of `model` on `split`, in %."""
    logits = data.task.predict(model, {data.task.inputs()[0].name: split.x})
    return float((logits.argmax(1) == split.y).mean() * 100)


def worker(args: list[str]) -> dict[str, Any]:
    """One training run in this process (called as `--worker ROLE ...`); returns the result row."""
    import torch

    from edgekd.distill.losses import CombinedLoss, build_loss
    from edgekd.distill.students import build_student, describe
    from edgekd.distill.trainer import FitPlan
    from edgekd.examples.fashion_mnist import load

    role, width, epochs, lr, seed, losses, teacher = args[0], float(args[1]), int(args[2]), float(args[3]), int(args[4]), args[5], args[6]
    if role == "student":  # two at a time; the teacher trains alone, before them, on torch's default threads
        torch.set_num_threads(1)
    splits, start = load(), time.perf_counter()
    source, train_idx, val = selection_data(splits)
    data = train_data(source)
    torch.manual_seed(seed)
    model = build_student("plain_cnn", source.splits.input_shape, source.splits.num_classes, width=width)
    size = describe(model, source.splits.input_shape)
    plan = FitPlan(epochs, lr, BATCH_SIZE, seed, role)
    if role == "teacher":  # trained without the validation images (see the docstring)
        np.save(teacher, train_teacher(model, data, plan, splits.train.x))
        return {"role": "teacher", **TEACHER, "teacher_without_val": True, "params": size["params"], "macs": size["macs"], "seconds": time.perf_counter() - start}
    objective = CombinedLoss([(spec.get("weight", 1.0), build_loss(spec["name"], spec.get("params", {}))) for spec in json.loads(losses)])
    train_student(model, data, plan, objective, np.load(teacher)[train_idx].astype(np.float32))
    return {"role": "student", "teacher_without_val": True, "width": width, "epochs": epochs, "lr": lr, "seed": seed, "losses": json.loads(losses),
            "val_accuracy": accuracy(data, model, val), "params": size["params"], "macs": size["macs"], "seconds": time.perf_counter() - start}


def run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", *args], check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    with JSONL.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return row


def report() -> None:
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    teacher = next(r for r in rows if r["role"] == "teacher")
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["role"] == "student":
            groups.setdefault((json.dumps(r["losses"]), r["lr"], r["epochs"]), []).append(r["val_accuracy"])
    lines = ["# Choosing the Fashion-MNIST benchmark settings (validation split)", "", __doc__.split("\n\n")[1].replace("\n", " "), "",
             f"Teacher: plain_cnn width {teacher['width']}, {teacher['epochs']} epochs, lr {teacher['lr']} "
             f"({teacher['macs']:,} MACs); student: plain_cnn width {STUDENT['width']} (MACs in the rows).", "",
             "| losses | lr | epochs | seeds | validation accuracy (mean) | per seed |", "|---|---|---|---|---|---|"]
    for (losses, lr, epochs), accs in sorted(groups.items(), key=lambda kv: -statistics.mean(kv[1])):
        lines.append(f"| `{losses}` | {lr} | {epochs} | {len(accs)} | {statistics.mean(accs):.2f} % | "
                     f"{', '.join(f'{a:.2f}' for a in accs)} |")
    flawed = [r for r in rows if not r.get("teacher_without_val")]
    lines += ["", CHOSEN, ""] + ([PROVENANCE, ""] if flawed else []) + [f"Measured on this host, {len(rows)} runs from {JSONL.name}; 5,000 validation images: one image is 0.02 pt, "
              "and the binomial standard error of one accuracy near 93 % is ~0.36 pt, so single-seed differences below ~0.5 pt "
              "are not evidence."]
    MD.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .jsonl")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    args = parser.parse_args()
    if not args.report:
        RESULTS.mkdir(exist_ok=True)
        JSONL.write_text("")  # a new selection (the previous one stays in git history)
        teacher = RESULTS.parent / f".select-teacher-w{TEACHER['width']}-e{TEACHER['epochs']}-noval.npy"  # logits, kept for re-runs
        if not teacher.exists():
            run(["teacher", str(TEACHER["width"]), str(TEACHER["epochs"]), str(TEACHER["lr"]), "0", CE, str(teacher)])
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda g: run(["student", str(STUDENT["width"]), str(g[4]), str(g[1]), str(g[2]), g[3], str(teacher)]), GRID))
    report()


if __name__ == "__main__":
    main()
