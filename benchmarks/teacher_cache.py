"""Distillation epoch time with the teacher run at every step vs with its logits cached.

Same data (the built-in example's train split, `edgekd.examples.digits.load()`), same student
(`edgekd.examples.digits:student`, width 8), same shuffled mini-batches, same optimizer (AdamW,
lr 4e-3) and loss (KL at T=4: `hinton_kd` with alpha=1). The only difference: "uncached" runs the
teacher (`edgekd.examples.digits:teacher`, eval mode, no grad) on every mini-batch; "cached" reads the
batch's rows (`edgekd.distill.teaching.rows_at`, as distillation does) of the memory-mapped float32
logits that `edgekd.distill.logit_cache.cached_teacher_logits` returned for a SplitsSource of the
example's splits (full logits, k=None). Teachers of width 32 (the example's) and 64 show how the saving scales with
the teacher's cost. The teachers are untrained: the time of a forward pass does not depend on the
weights' values.

The two modes' epochs are interleaved (uncached, cached, uncached, ...) so that load from other
processes on a shared machine falls on both alike; each mode has one untimed warm-up epoch, then
`--epochs` timed epochs (time.perf_counter around each); the table gives the medians, their ratio,
and the median of the per-epoch-pair ratios. The cache's one-time costs (the miss: one teacher pass over the
training data plus the atomic write; the hit: reading the entry back) are timed separately.
Writes teacher_cache.json and .md into benchmarks/results/ (or --out).

    python benchmarks/teacher_cache.py [--epochs 7] [--widths 32 64] [--batch-size 64] [--threads 1] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgekd.common.toolchain import host_info, version
from edgekd.data.sources import SplitsSource
from edgekd.distill.logit_cache import cached_teacher_logits
from edgekd.distill.losses import hinton_kd
from edgekd.distill.teachers import TorchTeacher
from edgekd.distill.teaching import rows_at
from edgekd.examples import digits

RESULTS = Path(__file__).parent / "results"
TEMPERATURE = 4.0
EXAMPLE_EPOCHS = 60  # edgekd/examples/digits.toml [distill] epochs


class _Run:
    """One mode's student, optimizer and batch order; `epoch()` trains one epoch and returns its seconds."""

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], student: torch.nn.Module,
                 x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        self.step, self.student, self.x, self.y, self.batch_size = step, student, x, y, batch_size
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=4e-3, weight_decay=1e-4)
        self.generator = torch.Generator().manual_seed(0)  # both modes see the same batches

    def epoch(self) -> float:
        self.student.train()
        start = time.perf_counter()
        order = torch.randperm(len(self.y), generator=self.generator)
        for first in range(0, len(order), self.batch_size):
            idx = order[first:first + self.batch_size]
            loss = self.step(self.x[idx], self.y[idx], idx)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - start


def measure(width: int, epochs: int, batch_size: int, cache_dir: Path) -> dict[str, object]:
    splits = digits.load()
    x, y = torch.from_numpy(splits.train.x), torch.from_numpy(splits.train.y)
    torch.manual_seed(0)
    teacher = digits.teacher(width=width).eval()

    teacher_source = TorchTeacher(teacher, None, f"torch module edgekd.examples.digits:teacher(width={width})")
    data = SplitsSource(splits)
    data.fingerprint()  # hashed once per source, before the timed calls (a build hashes its data before any stage)
    start = time.perf_counter()
    logits, hit = cached_teacher_logits(teacher_source, data, cache_dir)
    miss_s = time.perf_counter() - start
    assert not hit
    start = time.perf_counter()
    _, hit = cached_teacher_logits(teacher_source, data, cache_dir)
    hit_s = time.perf_counter() - start
    assert hit

    torch.manual_seed(1)
    student_u = digits.student()
    torch.manual_seed(1)
    student_c = digits.student()

    def uncached(xb: torch.Tensor, yb: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(xb)
        return hinton_kd(student_u(xb), target, yb, TEMPERATURE, 1.0)

    def cached(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return hinton_kd(student_c(xb), rows_at(logits, idx), yb, TEMPERATURE, 1.0)

    runs = {"uncached": _Run(uncached, student_u, x, y, batch_size), "cached": _Run(cached, student_c, x, y, batch_size)}
    times: dict[str, list[float]] = {"uncached": [], "cached": []}
    for epoch in range(epochs + 1):  # interleaved, so load from other processes hits both modes alike
        for mode, run in runs.items():
            seconds = run.epoch()
            if epoch:  # epoch 0 is the warm-up
                times[mode].append(seconds)
    med_u, med_c = statistics.median(times["uncached"]), statistics.median(times["cached"])
    paired = statistics.median(c / u for c, u in zip(times["cached"], times["uncached"]))
    return {
        "teacher_width": width, "train_samples": len(y), "batch_size": batch_size,
        "uncached_epoch_s": times["uncached"], "cached_epoch_s": times["cached"],
        "median_uncached_epoch_s": med_u, "median_cached_epoch_s": med_c, "cached_over_uncached": med_c / med_u,
        "median_paired_ratio": paired, "cache_miss_s": miss_s, "cache_hit_s": hit_s,
        f"uncached_{EXAMPLE_EPOCHS}_epochs_s": EXAMPLE_EPOCHS * med_u,
        f"cached_{EXAMPLE_EPOCHS}_epochs_s_cold": miss_s + EXAMPLE_EPOCHS * med_c,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per mode (after one warm-up epoch)")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64], help="teacher widths")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a loaded shared VM, OpenMP threads that wait for each other slow small models down erratically)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for teacher_cache.json and .md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for width in args.widths:
            row = measure(width, args.epochs, args.batch_size, Path(tmp) / f"w{width}")
            rows.append(row)
            print(f"teacher width {width}: uncached {row['median_uncached_epoch_s']:.3f} s/epoch, cached "
                  f"{row['median_cached_epoch_s']:.3f} s/epoch, ratio {row['cached_over_uncached']:.3f}", file=sys.stderr)
    result: dict[str, Any] = {
        "what": "distillation epoch time, teacher run every step (uncached) vs cached teacher logits, same student and data",
        "how": (f"measured: time.perf_counter around each epoch, median of {args.epochs} epochs after 1 warm-up epoch; "
                f"torch {version('torch')} CPU, {torch.get_num_threads()} intra-op threads; built-in digits train split; "
                f"AdamW lr 4e-3, KL at T={TEMPERATURE}, batch {args.batch_size}; untrained teachers (speed does not depend on weights)"),
        "host": host_info(),
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "teacher_cache.json").write_text(json.dumps(result, indent=1) + "\n")
    md = ["# Teacher-logit cache: distillation epoch time", "", result["what"] + ".", "", result["how"] + ".", "",
          f"Host: {result['host']['cpu']}, {result['host']['cores']} usable cores, {result['host']['os']}, Python {result['host']['python']}; "
          f"1-minute load average {load_before[0]:.1f} before, {result['load_average_1_5_15_min']['after'][0]:.1f} after "
          "(a shared VM: other processes ran meanwhile, which is why the two modes' epochs are interleaved).", "",
          "| teacher width | samples | uncached s/epoch | cached s/epoch | cached / uncached (of medians; median of paired epochs) | cache miss (one teacher pass + write) s | cache hit (read) s "
          f"| {EXAMPLE_EPOCHS} epochs uncached s | {EXAMPLE_EPOCHS} epochs cached, cold cache s |",
          "|---|---|---|---|---|---|---|---|---|",
          *(f"| {r['teacher_width']} | {r['train_samples']} | {r['median_uncached_epoch_s']:.3f} | {r['median_cached_epoch_s']:.3f} "
            f"| {r['cached_over_uncached']:.3f}; {r['median_paired_ratio']:.3f} | {r['cache_miss_s']:.3f} | {r['cache_hit_s']:.4f} "
            f"| {r[f'uncached_{EXAMPLE_EPOCHS}_epochs_s']:.1f} | {r[f'cached_{EXAMPLE_EPOCHS}_epochs_s_cold']:.1f} |" for r in rows),
          "", f"The {EXAMPLE_EPOCHS}-epoch columns are extrapolated from the medians (the example's `[distill] epochs`); "
          "the cold cached figure adds the one-time miss. The cached mode trains the same student in every row, so the "
          "differences between rows in its column are this machine's run-to-run noise. Per-epoch samples are in teacher_cache.json."]
    (args.out / "teacher_cache.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
