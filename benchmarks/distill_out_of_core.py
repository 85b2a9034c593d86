"""Distillation on data larger than the memory it is allowed: `edgekd build` of a project whose data
factory returns torch IterableDatasets that read blocks of rows of a memory-mapped `.npy` on disk in order, run in a
cgroup (v1) memory limit, at several data sizes. Records, per size: whether the build passed, its peak
RSS (getrusage of the build process), the cgroup's peak usage (which counts page cache too) and
failcnt, the wall time, and the on-disk teacher-logit cache. Writes
benchmarks/results/distill_out_of_core.{json,md}.

    python benchmarks/distill_out_of_core.py                    # 0.25, 1 and 3 GB of train data, 1 GB limit
    python benchmarks/distill_out_of_core.py --sizes-gb 0.1 --limit-gb 1   # a quick check

Needs root (it makes a cgroup under /sys/fs/cgroup/memory). The images are 3x64x64 float32 (48 KiB each)
with labels from fixed random projections of a 4x4 average-pooled copy (a learnable rule; the point
is memory, not accuracy). Teacher and student are cheap on purpose (8x8 average pooling, then an MLP:
hidden 256 and 32), so the run is bound by streaming the data, not by arithmetic; one epoch each,
profile ci.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch.utils.data import IterableDataset

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SHAPE = (3, 64, 64)
CLASSES = 10
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
SMALL_SPLIT = 512  # calibration and test samples
BLOCK = 256  # rows read from the memory-mapped files at a time


# ---------------------------------------------------------------- the data factory (run inside the build)

class MemmapImages(IterableDataset):
    """A torch IterableDataset over rows start..stop of `images.npy` / `labels.npy`, read in order in
    blocks of BLOCK rows from the memory-mapped files (never whole): sequential reads, as a streamed
    data set on disk is read; edgekd shuffles it with its shuffle buffer."""

    def __init__(self, folder: str, start: int, stop: int) -> None:
        super().__init__()
        self.folder, self.start, self.stop = folder, start, stop
        self.num_classes = CLASSES

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.int64]]:
        images = np.load(Path(self.folder) / "images.npy", mmap_mode="r")
        labels = np.load(Path(self.folder) / "labels.npy", mmap_mode="r")
        for first in range(self.start, self.stop, BLOCK):
            block_x, block_y = np.array(images[first:min(self.stop, first + BLOCK)]), np.array(labels[first:min(self.stop, first + BLOCK)])
            for x, y in zip(block_x, block_y):
                yield x, np.int64(y)


def pooled_mlp(input_shape: list[int], num_classes: int, hidden: int) -> Any:
    """8x8 average pooling, then a two-layer MLP (cheap per sample: the data's streaming dominates)."""
    from torch import nn

    channels, height, width = input_shape
    return nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(channels * (height // 8) * (width // 8), hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))


def load(folder: str) -> dict[str, Any]:
    """train = all but the last 2 x SMALL_SPLIT rows; calib and test SMALL_SPLIT rows each."""
    n = len(np.load(Path(folder) / "labels.npy", mmap_mode="r"))
    train_end = n - 2 * SMALL_SPLIT
    return {"train": MemmapImages(folder, 0, train_end), "calib": MemmapImages(folder, train_end, n - SMALL_SPLIT),
            "test": MemmapImages(folder, n - SMALL_SPLIT, n)}


# ---------------------------------------------------------------- the benchmark

def make_data(folder: Path, train_bytes: float, seed: int = 0) -> int:
    """images.npy / labels.npy with train_bytes of train images (+ calib and test), written in chunks."""
    per = int(np.prod(SHAPE)) * 4
    n = int(train_bytes // per) + 2 * SMALL_SPLIT
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.float32, shape=(n, *SHAPE))
    labels = np.lib.format.open_memmap(folder / "labels.npy", mode="w+", dtype=np.int64, shape=(n,))
    rng = np.random.default_rng(seed)
    projection = np.random.default_rng(1234).standard_normal((SHAPE[0] * 16 * 16, CLASSES)).astype(np.float32)
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        x = rng.standard_normal((stop - start, *SHAPE), dtype=np.float32)
        pooled = x.reshape(stop - start, SHAPE[0], 16, 4, 16, 4).mean(axis=(3, 5)).reshape(stop - start, -1)
        images[start:stop] = x
        labels[start:stop] = (pooled @ projection).argmax(axis=1)
    images.flush()
    labels.flush()
    del images, labels
    return n


PROJECT = """name = "out-of-core"
[teacher]
factory = "distill_out_of_core:pooled_mlp"
args = {{ input_shape = [3, 64, 64], num_classes = 10, hidden = 256 }}
[teacher.train]
epochs = 1
lr = 0.004
batch_size = 128
[student]
factory = "distill_out_of_core:pooled_mlp"
args = {{ input_shape = [3, 64, 64], num_classes = 10, hidden = 32 }}
[data]
factory = "distill_out_of_core:load"
args = {{ folder = "{folder}" }}
[distill]
epochs = 1
lr = 0.004
batch_size = 128
[quantize]
calibration_samples = 256
"""


# runs the build as its child, polling the child's /proc status every 50 ms: the peak of its anonymous
# resident memory (RssAnon: what it holds itself) and of its resident file pages (RssFile: mapped files,
# the memory-mapped data included, reclaimable page cache), and getrusage's ru_maxrss (both together)
WRAPPER = """
import json, resource, subprocess, sys, time
proc = subprocess.Popen(sys.argv[2:])
peak = {"RssAnon": 0, "RssFile": 0}
while proc.poll() is None:
    try:
        for line in open(f"/proc/{proc.pid}/status"):
            key = line.split(":")[0]
            if key in peak:
                peak[key] = max(peak[key], int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.05)
json.dump({"code": proc.returncode, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
           "anon_kb": peak["RssAnon"], "file_kb": peak["RssFile"]}, open(sys.argv[1], "w"))
"""


def run_limited(argv: list[str], limit_bytes: int, env: dict[str, str], work: Path) -> dict[str, Any]:
    """Run `argv` inside a fresh memory cgroup limited to `limit_bytes` (swap included where the
    kernel accounts it); returns exit code, wall time, peak RSS and the cgroup's peak and failcnt."""
    group = CGROUP_ROOT / f"edgekd-ooc-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    result_file = work / f"rss-{time.monotonic_ns()}.json"
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        started = time.perf_counter()
        proc = subprocess.run(["sh", "-c", f'echo $$ > "{group}/cgroup.procs" && exec "$0" "$@"',
                               sys.executable, "-c", WRAPPER, str(result_file), *argv], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        child = json.loads(result_file.read_text()) if result_file.is_file() else {"code": proc.returncode}
        mb = {k: None if child.get(k) is None else child[k] / 1024 for k in ("maxrss_kb", "anon_kb", "file_kb")}
        return {"code": child["code"], "seconds": seconds, "peak_rss_mb": mb["maxrss_kb"], "peak_anon_mb": mb["anon_kb"],
                "peak_file_mapped_mb": mb["file_kb"],
                "cgroup_peak_mb": int((group / "memory.max_usage_in_bytes").read_text()) / 2**20,
                "cgroup_failcnt": int((group / "memory.failcnt").read_text()),
                "stdout_tail": proc.stdout[-1500:], "stderr_tail": proc.stderr[-1500:]}
    finally:
        for _ in range(50):  # the cgroup empties once its last process is reaped
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def drop_page_cache() -> None:
    """sync, then drop clean page cache (root), so no page of the freshly written data stays cached."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("1")


def one_size(size_gb: float, limit_gb: float, work: Path) -> dict[str, Any]:
    folder = work / f"data-{size_gb:g}gb"
    samples = make_data(folder, size_gb * 2**30)
    drop_page_cache()  # the data's pages must be read (and charged) inside the limited cgroup, not left cached by the writer
    project = work / f"project-{size_gb:g}gb.toml"
    project.write_text(PROJECT.format(folder=folder))
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "EDGEKD_CACHE_DIR": str(work / f"cache-{size_gb:g}gb")}
    argv = [sys.executable, "-m", "edgekd.cli.main", "build", "--project", str(project), "--target", "x86",
            "--profile", "ci", "--out", str(work / f"build-{size_gb:g}gb")]
    run = run_limited(argv, int(limit_gb * 2**30), env, work)
    caches = sorted(p for p in (work / f"cache-{size_gb:g}gb" / "teacher-logits").glob("*") if p.is_file())
    data_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    return {"train_gb": size_gb, "samples": samples, "data_on_disk_mb": data_mb, "limit_mb": limit_gb * 1024,
            "data_over_limit": data_mb / (limit_gb * 1024),
            "teacher_logit_cache": [{"file": p.name, "mb": p.stat().st_size / 2**20} for p in caches], **run}


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "distill_out_of_core.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Distillation out of core", "", __doc__.split("\n\n")[0].replace("\n", " "), "",
             "| train data | samples | data / limit | build | peak anonymous RSS | peak mapped-file RSS | ru_maxrss | cgroup peak (incl. page cache) | failcnt | wall |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mbs = " | ".join("n/a" if r[k] is None else f"{r[k]:.0f} MB" for k in ("peak_anon_mb", "peak_file_mapped_mb", "peak_rss_mb"))
        lines.append(f"| {r['data_on_disk_mb'] / 1024:.2f} GB | {r['samples']:,} | {r['data_over_limit']:.1f}x | "
                     f"{'pass' if r['code'] == 0 else 'exit ' + str(r['code'])} | {mbs} | {r['cgroup_peak_mb']:.0f} MB | "
                     f"{r['cgroup_failcnt']} | {r['seconds']:.0f} s |")
    lines += ["", f"How: {meta['how']}", ""]
    (RESULTS / "distill_out_of_core.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.25, 1.0, 3.0])
    parser.add_argument("--limit-gb", type=float, default=1.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from edgekd.common.toolchain import host_info, versions

    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekd-ooc-"))
    rows = []
    for size in args.sizes_gb:
        rows.append(one_size(size, args.limit_gb, work))
        print(json.dumps({k: v for k, v in rows[-1].items() if not k.endswith("_tail")}), flush=True)
    meta = {"host": host_info(), "toolchain": versions(("torch", "onnxruntime", "numpy")), "limit_gb": args.limit_gb,
            "how": (f"each build in its own cgroup v1 memory cgroup limited to {args.limit_gb:g} GiB (memory.limit_in_bytes, and "
                    "memsw where accounted); page cache dropped after writing the data, so the build reads and is charged for it; "
                    "peaks of the build process's RssAnon (memory it holds) and RssFile (mapped files: the data's pages, reclaimable) "
                    "polled every 50 ms from /proc, and getrusage's ru_maxrss (both); the cgroup's peak counts page cache, which the "
                    "kernel reclaims under the limit (failcnt: how often usage hit it)")}
    write_results(rows, meta)
    return 0 if all(r["code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
