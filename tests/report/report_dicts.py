"""Report dicts shaped like a real build's report.json (stages, metrics, verdicts, latency measured,
estimated or absent), built by hand for the report views' tests; each part the page draws is checked
against report.schema.json as it is built."""
from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import numpy as np

from edgekd.pipeline.results import Metric, StageRecord, Verdict
from edgekd.report.build_report import SCHEMA_FILE

BUDGETS = {"distill_accuracy_drop_pt": 3.0, "export_parity_max_abs_diff": 1e-4, "export_accuracy_drop_pt": 0.3,
           "quantize_accuracy_drop_pt": 1.0, "quantize_rule_violations": 0, "fallback_nodes_pct": None, "fallback_macs_pct": None,
           "unsupported_nodes": 0, "overall_accuracy_drop_pt": 3.0, "size_mb": 1.0, "latency_p90_ms": 1.0}
ORT = "onnxruntime 1.32.0 CPUExecutionProvider"
WHERE = "this host (AMD EPYC)"


def m(value: float | None, unit: str, how: str, method: str = "measured") -> Metric:
    return Metric(value, unit, method, how)


def acc(value: float, runtime: str = ORT) -> Metric:
    return m(value, "%", f"top-1 on the 360 held-out test samples, {runtime}")


def drop(budget: str, stage: str, a: str, b: str, accs: dict[str, float]) -> Verdict:
    return Verdict(budget, stage, f"{a}.accuracy - {b}.accuracy", accs[a] - accs[b], BUDGETS[budget], "pt")


def stage_records(accs: dict[str, float], not_run_from: str | None) -> list[StageRecord]:
    """The stages of `edgekd build` with the metrics and verdicts a real build records; from
    `not_run_from` on, the stages are 'not run' as after a failed stage in a real build."""
    sizes = {"onnx_fp32": 0.041783, "int8": 0.02278, "engine": 0.011988}

    def size(k: str, stage: str) -> Verdict:
        return Verdict("size_mb", stage, f"{k}.size_mb", sizes[k], BUDGETS["size_mb"], "MB")

    torch = "torch 2.13.0+cpu eager, CPU"
    records = [
        StageRecord("teacher", "ran", "a" * 64, 8.8, "2026-11-23T18:56:34+00:00",
                    metrics={"teacher.accuracy": acc(accs["teacher"], torch), "teacher.params": m(160074, "", "parameters of the torch module")},
                    notes=["teacher trained here: 15 epochs on 1257 samples"]),
        StageRecord("distill", "cached", "b" * 64, 0.01, "2026-11-23T18:50:00+00:00",
                    metrics={"student.accuracy": acc(accs["student"], torch)},
                    verdicts=[drop("distill_accuracy_drop_pt", "distill", "teacher", "student", accs)]),
        StageRecord("export", "ran", "c" * 64, 2.9, "2026-11-23T18:56:42+00:00",
                    metrics={"onnx_fp32.accuracy": acc(accs["onnx_fp32"]), "onnx_fp32.size_mb": m(sizes["onnx_fp32"], "MB", "file size of student.onnx"),
                             "export.parity_max_abs_diff": m(7.6e-06, "", "max |logit difference| over 360 test samples")},
                    verdicts=[Verdict("export_parity_max_abs_diff", "export", "max |onnx - torch| logits", 7.6e-06, 1e-4, ""),
                              drop("export_accuracy_drop_pt", "export", "student", "onnx_fp32", accs)]),
        StageRecord("quantize", "ran", "d" * 64, 0.09, "2026-11-23T18:56:43+00:00",
                    metrics={"int8.accuracy": acc(accs["int8"]), "int8.size_mb": m(sizes["int8"], "MB", "file size of student_int8.onnx")},
                    verdicts=[drop("quantize_accuracy_drop_pt", "quantize", "onnx_fp32", "int8", accs), size("int8", "quantize")]),
        StageRecord("compile", "ran", "e" * 64, 0.01, "2026-11-23T18:56:43+00:00",
                    metrics={"engine.size_mb": m(sizes["engine"], "MB", "file size of engine/engine.onnx")}, verdicts=[size("engine", "compile")]),
        StageRecord("evaluate", "ran", "f" * 64, 0.004, "2026-11-23T18:56:43+00:00", metrics={"engine.accuracy": acc(accs.get("engine", 0.0))},
                    verdicts=[drop("overall_accuracy_drop_pt", "evaluate", "teacher", "engine", accs)]),
        StageRecord("bench", "ran", "0" * 64, 0.46, "2026-11-23T18:56:43+00:00"),
    ]
    if not_run_from is not None:
        names = [r.name for r in records]
        first = names.index(not_run_from)
        why = f"an earlier stage failed: {names[first - 1]}" if first else "the search stage failed"
        records[first:] = [StageRecord(name, "not run", notes=[why]) for name in names[first:]]
    return records


def measured_latency(new_keys: bool = True) -> dict[str, Any]:
    """bench.json of a measured run: 400 samples (a lognormal spread like a CPU's), their percentiles and,
    with `new_keys`, latency.compare / scenarios.Offline / top_ops."""
    samples = (0.027 + np.random.default_rng(0).lognormal(-7.5, 1.0, 400)).round(6).tolist()
    stats = {"runs": 400, "p50_ms": float(np.percentile(samples, 50)), "p90_ms": float(np.percentile(samples, 90)),
             "p99_ms": float(np.percentile(samples, 99)), "mean_ms": float(np.mean(samples)), "min_ms": min(samples),
             "max_ms": max(samples), "throughput_per_s": 1000 / float(np.mean(samples))}
    lat = {**stats, "samples_ms": samples, "batch": 1, "intra_op_threads": 2, "peak_rss_mb": 79.7, "engine_rss_mb": 31.8,
           "method": "measured", "where": WHERE}
    if new_keys:
        lat["cv"] = float(np.std(samples) / np.mean(samples))
        lat["scenarios"] = {"SingleStream": {**stats, "cv": lat["cv"]}}
        lat["compare"] = {"teacher": {"p90_ms": 0.41, "method": "measured", "how": "PyTorch 2.13.0+cpu eager fp32, batch 1"},
                          "student_fp32": {"p90_ms": 0.052, "method": "measured", "how": f"the fp32 student (student.onnx) in {ORT}"},
                          "engine": {"p90_ms": stats["p90_ms"], "method": "measured", "how": WHERE}}
        lat["scenarios"]["Offline"] = {"best_batch": 16, "throughput_per_s": 410000.0, "how": "batch sizes doubled from 1",
                                        "batches": [{"batch": b, "throughput_per_s": t, "p90_ms": b * 1000 / t * 1.1, "mean_ms": b * 1000 / t,
                                                     "runs": 100} for b, t in ((1, 33000.0), (2, 61000.0), (4, 120000.0), (8, 260000.0), (16, 410000.0))]}
        lat["top_ops"] = [{"op_type": op, "ms": ms, "pct": pct, "nodes": n} for op, ms, pct, n in
                          (("QLinearConv", 0.012, 55.0, 2), ("MaxPool", 0.004, 18.0, 2), ("QGemm", 0.003, 14.0, 2), ("Reshape", 0.0028, 13.0, 1))]
        lat["top_ops_how"] = "ONNX Runtime profiler (SessionOptions.enable_profiling), 20 runs at batch 1"
    return lat


def estimated_latency() -> dict[str, Any]:
    where = "estimated (nothing here runs the target): roofline model with targets/npu.toml [device] figures (npu)"
    return {"method": "estimated", "where": where, "latency_ms": 0.5, "p50_ms": 0.5, "p90_ms": 0.5, "p99_ms": 0.5, "mean_ms": 0.5,
            "batch": 1, "precision": "int8", "assumptions": ["[device] peak_tops.int8 = 26"],
            "per_op_type": {"Conv": {"ms": 0.4, "nodes": 2, "macs": 150000, "bound": "compute"},
                            "Relu": {"ms": 0.1, "nodes": 2, "macs": 0, "bound": "memory"}},
            "compare": {"teacher": {"p90_ms": None, "method": "not measured", "how": "a torch teacher has no graph for the target's latency model"},
                        "student_fp32": {"p90_ms": 1.2, "method": "estimated", "how": "the fp32 student as fp16: roofline model"},
                        "engine": {"p90_ms": 0.5, "method": "estimated", "how": where}}}


def report(latency: Any = "measured", not_run_from: str | None = None, int8: float = 98.61) -> dict[str, Any]:
    accs = {"teacher": 98.89, "student": 98.61, "onnx_fp32": 98.61, "int8": int8, "engine": int8}
    records = stage_records(accs, not_run_from)
    metrics = {k: v for r in records for k, v in r.metrics.items()}
    failed = [v.to_json() for r in records for v in r.failed]
    source = {"file": "/work/main/x.toml", "sha256": "0" * 64, "via": "name"}
    data = {
        "schema_version": 1, "edgekd_version": "0.1.0", "created_at": "2026-11-23T18:56:43+00:00",
        "verdict": "fail" if failed else "pass", "failed_budgets": failed,
        "project": {**source, "name": "digits", "description": "digits"},
        "target": {**source, "name": "x86-avx2", "runtime": "onnxruntime-cpu", "description": "x86-64 CPU with AVX2"},
        "profile": {**source, "name": "default", "budgets": dict(BUDGETS)},
        "host": {"cpu": "AMD EPYC", "machine": "x86_64", "cores": 2, "os": "Linux 6.18", "python": "3.11.7"},
        "toolchain": {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"},
        "stages": [r.to_json() for r in records],
        "accuracy": {k: metrics[f"{k}.accuracy"].to_json() for k in accs if f"{k}.accuracy" in metrics},
        "latency": {"measured": measured_latency, "legacy": lambda: measured_latency(False), "estimated": estimated_latency,
                    None: lambda: None}[latency](),
    }
    for stage in data["stages"]:
        conforms(stage, "stage")
    if latency != "legacy":  # a report from before latency.scenarios / compare / top_ops
        conforms(data["latency"], "latency")
    return data


@functools.cache
def validator(definition: str) -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})


def conforms(part: Any, definition: str) -> None:
    """`part` is valid as report.schema.json's $defs/`definition` (the parts the page draws; the whole
    document also holds sections the page does not show)."""
    if part is not None:
        validator(definition).validate(part)
