"""Roofline estimate (edgekd.analysis.estimate) vs measured ONNX Runtime CPU latency on this host.

Models: six small ones built here (an MLP of 66 kMACs up to a VGG-style CNN of ~150 MMACs, exported
with torch.onnx, dynamo, opset 18, dynamic batch) and real architectures at full size from
edgekd.examples.zoo (random weights, exported with optimum-onnx): MobileNetV2 1.0, EfficientNet-B0,
ResNet-18 and ViT-Tiny/16 at 224x224, DistilBERT at sequence 128, and one decoding step of a 6-layer
GPT-2 (one new token with a KV cache of PAST earlier tokens, given as input shapes). Each in fp32 and
INT8: the small ones quantized with quant_pre_process + quantize_static (QDQ, S8S8, per-channel,
reduce_range, random calibration data), the real ones with edgekd.graph.quantize.quantize_int8 and the x86
target's recipe, calibrated on generated feeds (edgekd.graph.feeds): fine for timing, meaningless for
accuracy.

measured: batch-1 latency in child processes that import only onnxruntime and numpy, one per model
(its fp32 and int8 sessions; CPU EP, ORT_ENABLE_ALL, intra-op threads = every usable core,
sequential), feeds from edgekd.graph.feeds.make_feeds for every input: ROUNDS rounds that visit the
model's sessions in turn (after an idle pause of COOLDOWN_S), each with warm-up runs
then timed runs (time.perf_counter_ns; up to RUNS runs or SECONDS_PER_ROUND seconds, at least
MIN_RUNS); p50/p90 over all timed runs and each round's p50 (the spread this shared host adds).
The host is shared, so the script waits for a quiet host, counts the CPU time other processes use
during the measurement (/proc/stat), and keeps the least disturbed of up to ATTEMPTS attempts.
estimated: estimate() with the [device] table of the x86 target this host matches (targets/x86-*.toml,
alias `x86`), cores and clock read from this host, at the same input shapes as measured.

The x86 [device] figures were calibrated against these measurements on an AMD EPYC (Zen 3, AVX2,
2 vCPUs): this benchmark is where they were tuned, not an independent validation of them.

    python benchmarks/estimate_vs_measured.py                  # everything; writes benchmarks/results/...
    python benchmarks/estimate_vs_measured.py --quick          # tiny zoo sizes, few runs, nothing written
    python benchmarks/estimate_vs_measured.py --models vit,gpt2_decode --no-write
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WARMUP, RUNS, MIN_RUNS, SECONDS_PER_ROUND, ROUNDS = 50, 300, 20, 2.0, 3
COOLDOWN_S = 15.0  # idle pause before each model: after minutes of full load this host's cores slowed (~1.3x)
ATTEMPTS = 3  # whole measurements; the one least disturbed by other processes is kept
PAST = 127  # GPT-2 decoding step: KV cache of 127 tokens, one new token (128 positions in all)
ZOO_ROWS = {  # row name -> (zoo architecture, description)
    "mobilenet_v2": ("mobilenet_v2", "MobileNetV2 1.0, 224x224"),
    "efficientnet_b0": ("efficientnet", "EfficientNet-B0, 224x224"),
    "resnet18": ("resnet", "ResNet-18, 224x224"),
    "vit_tiny": ("vit", "ViT-Tiny/16, 224x224"),
    "distilbert": ("distilbert", "DistilBERT-base, sequence 128"),
    "gpt2_decode": ("gpt2", f"GPT-2 6 layers, one decoding step with a KV cache of {PAST} tokens"),
}


def small_models() -> dict[str, tuple[object, tuple[int, ...]]]:
    import torch.nn as nn

    def conv(cin: int, cout: int, groups: int = 1, k: int = 3) -> list:
        return [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups), nn.ReLU()]

    def dw_separable(cin: int, cout: int) -> list:
        return conv(cin, cin, groups=cin) + conv(cin, cout, k=1)

    def vgg(w: int) -> nn.Module:
        return nn.Sequential(*conv(3, w), *conv(w, w), nn.MaxPool2d(2), *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2),
                             *conv(2 * w, 4 * w), *conv(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))

    return {
        "mlp_tiny": (nn.Sequential(nn.Flatten(), nn.Linear(1024, 64), nn.ReLU(), nn.Linear(64, 10)), (1, 32, 32)),
        "cnn_small": (nn.Sequential(*conv(1, 8), nn.MaxPool2d(2), *conv(8, 16), nn.MaxPool2d(2), nn.Flatten(),
                                    nn.Linear(16 * 8 * 8, 10)), (1, 32, 32)),
        "mlp_wide": (nn.Sequential(nn.Flatten(), nn.Linear(3072, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                   nn.Linear(512, 10)), (3, 32, 32)),
        "cnn_dwsep": (nn.Sequential(*conv(3, 16), *dw_separable(16, 32), nn.MaxPool2d(2), *dw_separable(32, 64),
                                    nn.MaxPool2d(2), *dw_separable(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                    nn.Linear(128, 10)), (3, 32, 32)),
        "cnn_vgg_narrow": (vgg(32), (3, 32, 32)),
        "cnn_vgg_wide": (vgg(64), (3, 32, 32)),
    }


def build_small(workdir: Path, names: set[str] | None) -> dict[str, dict]:
    """Export and quantize the small models; name -> {"fp32", "int8", "inputs", "description"}."""
    import contextlib
    import io

    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.graph.export import export_onnx
    from edgekd.graph.resolve import load_inputs

    torch.manual_seed(0)
    built = {}
    for name, (module, shape) in small_models().items():
        if names is not None and name not in names:
            continue
        fp32, pre, int8 = (workdir / f"{name}{suffix}.onnx" for suffix in ("", ".pre", "_int8"))
        export_onnx(module.eval(), shape, fp32, opset=18)
        rng = np.random.default_rng(0)
        batches = iter([{"input": rng.standard_normal((1, *shape), dtype=np.float32)} for _ in range(16)])

        class Reader(CalibrationDataReader):
            def get_next(self) -> dict | None:
                return next(batches, None)

        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32), str(pre))
            quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        built[name] = {"fp32": fp32, "int8": int8, "inputs": load_inputs(fp32), "description": "small, built here"}
        print(f"built {name}", file=sys.stderr)
    return built


def zoo_shapes(arch: str, fp32: Path, size: str) -> dict[str, tuple[int, ...]]:
    """The input shapes measured and estimated: images at 224x224 (full size; ViT's is its own),
    text at the resolved default (sequence 128), GPT-2 one new token after PAST cached ones
    (15 for the tiny size)."""
    from edgekd.graph.resolve import load_inputs

    past = PAST if size == "full" else 15
    shapes: dict[str, tuple[int, ...]] = {}
    for i in load_inputs(fp32).inputs:
        if i.role == "image" and size == "full":
            shapes[i.name] = (1, i.shape[1], 224, 224)
        elif arch == "gpt2" and i.role == "past_key_values":
            shapes[i.name] = (*i.shape[:2], past, *i.shape[3:])
        elif arch == "gpt2":
            shapes[i.name] = (1, past + 1) if i.role == "attention_mask" else (1, 1)
    return shapes


def build_zoo(zoo_dir: Path, size: str, names: set[str] | None) -> dict[str, dict]:
    """The real architectures, exported once into `zoo_dir` (re-used) and quantized there."""
    from edgekd.config.loading import ConfigSearch, load_target
    from edgekd.config.models import QuantizeConfig
    from edgekd.examples import zoo
    from edgekd.graph.feeds import random_feedset
    from edgekd.graph.quantize import quantize_int8
    from edgekd.graph.resolve import load_inputs

    recipe = load_target("x86", ConfigSearch()).config.quantize
    built = {}
    for name, (arch, description) in ZOO_ROWS.items():
        if names is not None and name not in names:
            continue
        fp32 = zoo.export(arch, zoo_dir, size, "optimum")
        inputs = load_inputs(fp32, zoo_shapes(arch, fp32, size))
        int8 = fp32.with_name(f"model_int8_{'x'.join(str(d) for i in inputs.inputs for d in i.shape)[:40]}.onnx")
        if not int8.is_file():
            calib = random_feedset(inputs, 8).arrays
            quantize_int8(fp32, int8, calib, QuantizeConfig(calibration_samples=8), recipe)
        built[name] = {"fp32": fp32, "int8": int8, "inputs": inputs, "description": description}
        print(f"built {name} ({inputs.describe()[:100]})", file=sys.stderr)
    return built


def measure_child(requests_path: str) -> None:
    """Child process: time the requested sessions with onnxruntime only, in ROUNDS rounds that visit
    them in turn (so a burst of noise on this shared host hits each a little, not one a lot);
    prints JSON key -> summary over all rounds' samples."""
    import onnx
    import onnxruntime as ort

    sessions = {}
    for key, request in json.loads(Path(requests_path).read_text()).items():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = len(os.sched_getaffinity(0))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        opts.optimized_model_filepath = request["optimized"]
        session = ort.InferenceSession(request["path"], opts, providers=["CPUExecutionProvider"])
        with np.load(request["feeds"]) as data:
            feed = {k: data[k] for k in data.files}
        sessions[key] = (session, feed, opts)
    samples: dict[str, list[list[float]]] = {key: [] for key in sessions}
    for _ in range(ROUNDS):
        for key, (session, feed, _) in sessions.items():
            start = time.perf_counter()
            for i in range(WARMUP):
                session.run(None, feed)
                if i >= 4 and time.perf_counter() - start > SECONDS_PER_ROUND / 4:
                    break
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < RUNS and (len(times) < MIN_RUNS or time.perf_counter() - start < SECONDS_PER_ROUND):
                t0 = time.perf_counter_ns()
                session.run(None, feed)
                times.append((time.perf_counter_ns() - t0) / 1e6)
            samples[key].append(times)
    out = {}
    for key, rounds in samples.items():
        flat = [t for r in rounds for t in r]
        opts = sessions[key][2]
        out[key] = {"p50_ms": float(np.percentile(flat, 50)), "p90_ms": float(np.percentile(flat, 90)),
                    "p50_per_round_ms": [float(np.percentile(r, 50)) for r in rounds],
                    "runs": len(flat), "threads": opts.intra_op_num_threads,
                    "ort_nodes": len(onnx.load(opts.optimized_model_filepath, load_external_data=False).graph.node)}
    print(json.dumps(out))


def busy_cpu_s() -> float:
    """CPU-seconds all processes on this host have used (user+nice+system+irq+softirq+steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def child_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_for_quiet_host(window_s: float = 2.0, busy_below: float = 0.1, max_wait_s: float = 600.0) -> dict:
    """Wait until other processes use under `busy_below` of the CPUs over a `window_s` window (this
    host is shared: a concurrent test run doubles latencies), at most `max_wait_s`. Says what it saw."""
    cpus = len(os.sched_getaffinity(0))
    waited = 0.0
    while True:
        before = busy_cpu_s()
        time.sleep(window_s)
        waited += window_s
        share = (busy_cpu_s() - before) / (window_s * cpus)
        if share < busy_below or waited >= max_wait_s:
            return {"quiet": share < busy_below, "waited_s": waited, "busy_share_last_window": round(share, 3)}


def host() -> dict:
    import platform

    import onnxruntime
    import torch

    from edgekd.analysis.device import read_host_cpu
    from edgekd.common.toolchain import cpu_flags, cpu_model

    cpu = read_host_cpu()
    info = {}
    with open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model", "vendor_id") and key.strip() not in info:
                info[key.strip()] = value.strip()
    l2 = Path("/sys/devices/system/cpu/cpu0/cache/index2/size")
    return {"cpu": cpu_model(), **info, "physical_cores": cpu.cores, "logical_cpus": cpu.logical_cpus,
            "clock_mhz": round(cpu.clock_mhz, 1), "l2_per_core": l2.read_text().strip() if l2.exists() else None,
            "cache_mb": cpu.cache_mb, "vector_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "fma", "amx"))),
            "virtualized": "hypervisor" in cpu_flags(),
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__, "python": platform.python_version()}


def measure(requests: dict, workdir: Path, quiet_wait_s: float) -> tuple[dict, dict]:
    """Measure every model's fp32 and int8 sessions in a child process of their own (with every
    session of every model in one process the large models ran up to 1.5x slower here), all models
    in turn; up to ATTEMPTS times, keeping the attempt other processes disturbed least."""
    groups: dict[str, dict] = {}
    for key, request in requests.items():
        groups.setdefault(key.split("/")[0], {})[key] = request
    paths = []
    for name, group in groups.items():
        paths.append(workdir / f"requests_{name}.json")
        paths[-1].write_text(json.dumps(group))
    attempts = []
    for _ in range(ATTEMPTS):
        quiet = wait_for_quiet_host(max_wait_s=quiet_wait_s)
        busy_before, child_before = busy_cpu_s(), child_cpu_s()
        start = time.perf_counter()
        measured: dict = {}
        for path in paths:
            time.sleep(COOLDOWN_S)
            proc = subprocess.run([sys.executable, __file__, "--measure", str(path)], capture_output=True, text=True, check=True)
            measured.update(json.loads(proc.stdout))
        wall_s = time.perf_counter() - start
        foreign_cpu_s = busy_cpu_s() - busy_before - (child_cpu_s() - child_before)
        attempts.append((foreign_cpu_s, wall_s, quiet, measured))
        print(f"attempt {len(attempts)}: other processes used {foreign_cpu_s:.1f} CPU-s in {wall_s:.1f} s", file=sys.stderr)
        if foreign_cpu_s < 0.05 * wall_s * len(os.sched_getaffinity(0)):
            break
    foreign_cpu_s, wall_s, quiet, measured = min(attempts, key=lambda a: a[0])
    load = {"attempts": len(attempts), "kept": "the attempt with the least CPU used by other processes",
            "other_processes_cpu_s_per_attempt": [round(a[0], 1) for a in attempts], "before_measuring": quiet,
            "measurement_wall_s": round(wall_s, 1), "other_processes_cpu_s_during_measurement": round(foreign_cpu_s, 1)}
    return measured, load


def row(name: str, model: dict, prec: str, est: object, m: dict) -> dict:
    return {"model": name, "description": model["description"], "inputs": model["inputs"].describe(),
            "macs": sum(r["macs"] for r in est.per_node), "precision": prec,  # type: ignore[attr-defined]
            "measured_p50_ms": m["p50_ms"], "measured_p90_ms": m["p90_ms"], "estimated_ms": est.latency_ms,  # type: ignore[attr-defined]
            "ratio_est_over_measured": est.latency_ms / m["p50_ms"], "runs": m["runs"],  # type: ignore[attr-defined]
            "measured_p50_per_round_ms": m["p50_per_round_ms"], "ort_nodes_after_optimization": m["ort_nodes"],
            "ratio_est_over_best_round_p50": est.latency_ms / min(m["p50_per_round_ms"]),  # type: ignore[attr-defined]
            "estimated_kernels": sum(r["bound"] != "fused" for r in est.per_node),  # type: ignore[attr-defined]
            "fusions": est.fusions, "unknown_shapes": len(est.unknown_shapes),  # type: ignore[attr-defined]
            "estimated_top": {k: round(v["ms"], 4) for k, v in sorted(est.per_op_type.items(),  # type: ignore[attr-defined]
                                                                     key=lambda kv: -kv[1]["ms"])[:5]}}


def summarize(rows: list[dict], peak_tops: dict[str, float]) -> dict:
    def geomean(values: list[float]) -> float:
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")

    ratios = [r["ratio_est_over_measured"] for r in rows]
    return {"geomean_ratio_est_over_p50": geomean(ratios),
            "geomean_ratio_est_over_p90": geomean([r["estimated_ms"] / r["measured_p90_ms"] for r in rows]),
            "min_ratio": min(ratios), "max_ratio": max(ratios), "rows": len(ratios),
            "rows_within_0.67_1.5": sum(0.67 <= r <= 1.5 for r in ratios), "rows_within_2x": sum(0.5 <= r <= 2.0 for r in ratios),
            "rows_within_0.67_1.5_of_best_round": sum(0.67 <= r["ratio_est_over_best_round_p50"] <= 1.5 for r in rows),
            **{f"geomean_ratio_{p}": geomean([r["ratio_est_over_measured"] for r in rows if r["precision"] == p])
               for p in ("fp32", "int8")},
            "best_measured_throughput_over_estimate_peak": {  # 2 ops per MAC / p50, over the peak the estimate used
                p: max(2 * r["macs"] / (r["measured_p50_ms"] * 1e-3) / (peak_tops[p] * 1e12) for r in rows if r["precision"] == p)
                for p in ("fp32", "int8") if any(r["precision"] == p for r in rows)}}


def main() -> None:
    from edgekd.analysis.device import resolve
    from edgekd.analysis.estimate import estimate
    from edgekd.config.loading import ConfigSearch, load_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated rows to run (small: {', '.join(small_models())}; "
                                         f"real: {', '.join(ZOO_ROWS)})")
    parser.add_argument("--zoo-dir", type=Path, default=Path.home() / ".cache" / "edgekd-zoo",
                        help="where the real architectures are exported and quantized (re-used)")
    parser.add_argument("--quick", action="store_true", help="tiny zoo sizes, one round of few runs, nothing written")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no results")
    parser.add_argument("--quiet-wait-s", type=float, default=600.0, help="longest wait for a quiet host per attempt")
    parser.add_argument("--name", default="estimate_vs_measured", help="results file stem, e.g. one per host class")
    args = parser.parse_args()
    global ROUNDS, RUNS, SECONDS_PER_ROUND, ATTEMPTS, COOLDOWN_S
    if args.quick:
        ROUNDS, RUNS, SECONDS_PER_ROUND, ATTEMPTS, COOLDOWN_S = 1, 30, 0.3, 1, 0.0
    names = set(args.models.split(",")) if args.models else None
    target = load_target("x86", ConfigSearch())
    device = target.config.device
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        models = {**build_small(workdir, names), **build_zoo(args.zoo_dir, "tiny" if args.quick else "full", names)}
        requests = {}
        for name, model in models.items():
            from edgekd.graph.feeds import make_feeds

            feeds = workdir / f"{name}.feeds.npz"
            np.savez(feeds, **make_feeds(model["inputs"]))
            for prec in ("fp32", "int8"):
                requests[f"{name}/{prec}"] = {"path": str(model[prec]), "feeds": str(feeds),
                                              "optimized": str(workdir / f"{name}_{prec}.ort.onnx")}
        measured, load = measure(requests, workdir, 5.0 if args.quick else args.quiet_wait_s)
        rows = []
        for key in requests:
            name, prec = key.split("/")
            est = estimate(models[name][prec], device, precision=prec, batch=1, inputs=models[name]["inputs"])
            rows.append(row(name, models[name], prec, est, measured[key]))
            print(f"{key}: measured p50 {measured[key]['p50_ms']:.4f} ms, estimated {est.latency_ms:.4f} ms "
                  f"(ratio {rows[-1]['ratio_est_over_measured']:.2f})", file=sys.stderr)
    result = {
        "what": "batch-1 latency: roofline estimate (edgekd.analysis.estimate) vs ONNX Runtime CPU measurement",
        "how_measured": f"onnxruntime CPUExecutionProvider in one child process per model (its fp32 and int8 "
                        f"sessions), ORT_ENABLE_ALL, intra-op threads = usable cores, sequential, feeds from "
                        f"edgekd.graph.feeds.make_feeds; {ROUNDS} rounds over the model's sessions, each up to {WARMUP} warm-up runs then up to {RUNS} runs or {SECONDS_PER_ROUND} s "
                        f"(at least {MIN_RUNS}) timed with time.perf_counter_ns around session.run; p50/p90 of all timed runs",
        "how_estimated": f"edgekd.analysis.estimate.estimate(model, device, precision, batch=1, inputs=the measured "
                         f"shapes) with targets/{target.path.name} [device] (calibrated against these measurements, "
                         "see the docstring); ratio = estimated / measured p50",
        "host": host(), "host_load": load, "target": target.name,
        "estimate_assumptions_example": est.assumptions, "rows": rows,
        "summary": summarize(rows, resolve(device).peak_tops),
    }
    text = markdown(result, target.path)
    if not (args.quick or args.no_write):
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


def markdown(result: dict, target_file: Path) -> str:
    h, load, s = result["host"], result["host_load"], result["summary"]
    lines = [
        "# Estimated vs measured latency (batch 1, ONNX Runtime CPU)", "",
        f"Host: {h['cpu']} (family {h.get('cpu family')} model {h.get('model')}), {h['physical_cores']} cores "
        f"at {h['clock_mhz']} MHz (/proc/cpuinfo), L2 {h['l2_per_core']}/core, last-level cache {h['cache_mb']} MB, "
        f"flags {', '.join(h['vector_flags'])}; onnxruntime {h['onnxruntime']}; target {result['target']}.", "",
        f"Host load: before measuring, other processes used {load['before_measuring']['busy_share_last_window']:.0%} "
        f"of the CPUs (waited {load['before_measuring']['waited_s']:.0f} s for a quiet host); during the "
        f"{load['measurement_wall_s']} s measurement kept (best of {load['attempts']}) they used "
        f"{load['other_processes_cpu_s_during_measurement']} CPU-seconds (/proc/stat minus the measuring process's own CPU time).", "",
        f"**Measured**: {result['how_measured']}.", "", f"**Estimated**: {result['how_estimated']}.", "",
        "**Calibration**: the x86 `[device]` figures (compute efficiency per op class, DRAM bandwidth for weights that do "
        "not fit the cache) were set after seeing these measurements on this CPU: the table shows how well one set of "
        "per-op-class figures fits all rows, not an independent validation.", "",
        "| model | inputs | MACs | precision | measured p50 ms | p50 per round | measured p90 ms | estimated ms | est / p50 "
        "| est / best round | ORT nodes | est. kernels |",
        "|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        rounds = " / ".join(f"{v:.3g}" for v in r["measured_p50_per_round_ms"])
        lines.append(f"| {r['model']} | {r['inputs'][:60]} | {r['macs']:,} | {r['precision']} | {r['measured_p50_ms']:.4f} "
                     f"| {rounds} | {r['measured_p90_ms']:.4f} | {r['estimated_ms']:.4f} | **{r['ratio_est_over_measured']:.2f}** "
                     f"| {r['ratio_est_over_best_round_p50']:.2f} | {r['ort_nodes_after_optimization']} | {r['estimated_kernels']} |")
    lines += ["", f"Geometric mean of estimated / measured p50: **{s['geomean_ratio_est_over_p50']:.2f}** "
                  f"(fp32 {s['geomean_ratio_fp32']:.2f}, int8 {s['geomean_ratio_int8']:.2f}; range {s['min_ratio']:.2f} "
                  f"to {s['max_ratio']:.2f}; {s['rows_within_0.67_1.5']} of {s['rows']} rows within 0.67-1.5, "
                  f"{s['rows_within_2x']} within 2x); against p90: {s['geomean_ratio_est_over_p90']:.2f}; against each row's "
                  f"least disturbed round: {s['rows_within_0.67_1.5_of_best_round']} of {s['rows']} within 0.67-1.5.", "",
              "Best measured throughput (2 x MACs / p50) as a fraction of the peak the estimate used: " + ", ".join(
                  f"{p} {v:.2f}" for p, v in s["best_measured_throughput_over_estimate_peak"].items())
              + " (the peak is scaled from the clock /proc/cpuinfo reports).", "",
              "'p50 per round' shows how much this shared host moves the median between rounds; 'est / best round' "
              "compares with each row's least disturbed round. 'ORT nodes' counts the nodes of ONNX Runtime's optimized "
              "graph, which is what the x86 estimate costs; 'est. kernels' the kernels it executes there after folding "
              "the shape arithmetic ONNX Runtime runs at run time (the models have dynamic axes) and the free views "
              "(Reshape, Unsqueeze, ...). MACs are those of that graph (NCHWc pads channels to its block).", "",
              *([f"This host is a virtual machine: its /proc/cpuinfo 'cpu MHz' ({h['clock_mhz']} MHz), which the estimate's "
                 "peak is scaled by, is what the hypervisor reports, not the clock the cores run at under load."]
                if h.get("virtualized") else []),
              "", f"Device figures used ({target_file.name}, `[device]`):", "", "```toml", _device_table(target_file), "```", ""]
    return "\n".join(lines)


def _device_table(path: Path) -> str:
    text = path.read_text().split("[device]", 1)[1]
    return "[device]" + text.rstrip()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--measure":
        measure_child(sys.argv[2])
    else:
        main()
