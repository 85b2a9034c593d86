"""`edgekd bench BUILD_DIR|MODEL --target T` here, on this host: the SingleStream and Offline
scenarios, for decoder models TimeToFirstToken and DecodeTokensPerSecond (edgekd.perf.decoder), and
the per-op profile of a build's engine (with the settings the build tuned) or of any ONNX model
(with the target's [session] settings). Targets whose engine runs only on a device
(TensorRT, QNN HTP) get the latency model's estimate, said plainly, unless --device is given.

A build folder is verified first (edgekd.pipeline.build_folder: a folder a build did not finish, or
whose files do not match its report, is refused); its report.json gets the new measurement as its
latency (the bench stage's metrics and the latency budget's verdict are redone from it, bench.json's
recorded hash with it), under the folder's lock, and every view of the report is rewritten.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekd.common.artefacts import BENCH_JSON, ENGINE_JSON, STUDENT_INT8
from edgekd.common.tempdirs import temp_dir
from edgekd.config.loading import ConfigSearch, load_profile, load_target
from edgekd.config.models import BENCH_SCENARIOS, BenchConfig
from edgekd.errors import ConfigError
from edgekd.graph.inputs import ModelInputs

Progress = Callable[[str, int], None]  # (phase label, number of phases)


def phases(bench: Any) -> int:
    """How many progress steps a measurement with BenchConfig `bench` reports (at most)."""
    from edgekd.perf.decoder import DECODER_SCENARIOS
    from edgekd.perf.scenarios import offline_batches

    return (1 + ("Offline" in bench.scenarios) * len(offline_batches(bench.offline_max_batch, None))
            + sum(s in bench.scenarios for s in DECODER_SCENARIOS) + (bench.profile_runs > 0))


def _build_engine(build_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished build's report (verified: no marker, every artefact matches it) and engine.json."""
    from edgekd.pipeline.build_folder import verify

    report, engine_file = verify(build_dir), build_dir / ENGINE_JSON
    try:
        engine = json.loads(engine_file.read_text(encoding="utf-8")) if engine_file.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{engine_file}: not readable JSON ({exc})", "build again into this folder") from None
    if not isinstance(engine, dict):
        raise ConfigError(f"{build_dir} is not a build folder with an engine (no {ENGINE_JSON})",
                          "give a folder written by `edgekd build`, or an .onnx model with --target")
    return report, engine


def _built_for(report: dict[str, Any], section: str) -> str:
    """report[section]["name" | "file"]: the target or profile the build used."""
    value = report.get(section)
    value = value.get("name" if section == "target" else "file") if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise ConfigError(f"report.json has no {section} (not an edgekd build report)", "build again into this folder")
    return value


def _inputs(path: Path, model: Path, engine_meta: dict[str, Any], shapes: dict[str, tuple[int, ...]] | None) -> ModelInputs:
    """The inputs to time with: what the build resolved (engine.json), else resolved from the model."""
    from edgekd.graph.resolve import load_inputs

    if path.is_dir() and "inputs" in engine_meta and not shapes:
        return ModelInputs.from_json(engine_meta["inputs"])
    return load_inputs(model, shapes)


def with_scenarios(bench: BenchConfig, scenarios: list[str]) -> BenchConfig:
    """`bench` running `scenarios` instead (validated: an unknown name is a ConfigError)."""
    try:
        return BenchConfig.model_validate({**bench.model_dump(), "scenarios": scenarios})
    except ValidationError as exc:
        raise ConfigError(f"scenarios {scenarios}: {exc.errors()[0]['msg']}",
                          f"choose from {', '.join(BENCH_SCENARIOS)}") from None


def bench_local(path: Path, target: str | None, profile: str | None, search: ConfigSearch, threads: int | None = None,
                scenarios: list[str] | None = None, progress: Progress | None = None,
                shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Measure (or, for a device-only target, estimate) `path`: a build folder or an .onnx file,
    fed with generated values at the resolved input shapes (`shapes`: --shape overrides)."""
    from edgekd.common.toolchain import cpu_model
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.model_file import check_model_file
    from edgekd.perf.measure import measure

    path = Path(path)
    engine_meta: dict[str, Any] = {}
    if path.is_dir():
        report, engine_meta = _build_engine(path)
        target = target or _built_for(report, "target")
        profile = profile or (_built_for(report, "profile") if Path(_built_for(report, "profile")).is_file() else "default")
        model = path / "engine" / engine_meta.get("engine_file", "engine.onnx") if engine_meta.get("built_here") else path / STUDENT_INT8
    else:
        if target is None:
            raise ConfigError(f"{path}: a model needs --target", "e.g. edgekd bench model.onnx --target x86")
        model = check_model_file(path)
    resolved, prof = load_target(target, search), load_profile(profile or "default", search).config
    cfg = resolved.config
    inputs = _inputs(path, model, engine_meta, shapes)
    if cfg.runtime != "onnxruntime-cpu" or (path.is_dir() and not engine_meta.get("built_here")):
        from edgekd.analysis.estimate import estimate_for_target

        est = estimate_for_target(model, resolved, "int8" if "int8" in cfg.precisions else cfg.precisions[0], 1, inputs)
        return {"method": "estimated", "target": resolved.name, "model": str(model), "p50_ms": est["latency_ms"], "p90_ms": est["latency_ms"],
                "p99_ms": est["latency_ms"], "mean_ms": est["latency_ms"], "batch": 1,
                "where": f"estimated, not measured: {resolved.name}'s engine runs only on the device (use --device to measure there); "
                         f"roofline model with the target's [device] figures", **est}
    from edgekd.backends.runners import ONNXRUNTIME, OPENVINO, describe, settings_from

    runtime = OPENVINO if engine_meta.get("runtime") == OPENVINO else ONNXRUNTIME  # an OpenVINO engine the x86 tuner chose
    session = settings_from(runtime, engine_meta["session"]) if "session" in engine_meta else cfg.session
    if threads is not None:
        session = session.model_copy(update={"inference_num_threads" if runtime == OPENVINO else "intra_op_num_threads": threads})
    bench = prof.recipe.bench if scenarios is None else with_scenarios(prof.recipe.bench, scenarios)
    with temp_dir("bench") as tmp:  # named for this process: a killed bench's folder is swept by the next build
        total = phases(bench)
        result = measure(model, make_feeds(inputs, rows=bench.offline_max_batch), inputs, session, bench, tmp,
                         (lambda label: progress(label, total)) if progress else None)
    result.update({"method": "measured", "target": resolved.name, "model": str(model),
                   "where": f"this host ({cpu_model()}), {describe(runtime, session)}, `edgekd bench` with generated inputs "
                            f"({inputs.describe()})",
                   "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    return result


def update_build_report(build_dir: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Make `result` the build's latency: bench.json, report.json (latency, the bench stage's
    metrics and latency budget, the verdict) and the report's views."""
    from edgekd.backends.ort.backend import latency_metrics
    from edgekd.common.fsutil import atomic_write_text
    from edgekd.config.models import Budgets
    from edgekd.pipeline import budgets, build_folder
    from edgekd.pipeline.budgets import TTFT_MS
    from edgekd.pipeline.lm_metrics import bench_stage_metrics
    from edgekd.pipeline.results import Metric
    from edgekd.report.outputs import write_all

    with build_folder.updating(build_dir) as report:
        old = report.get("latency") or {}
        if "compare" in old and result["method"] == old.get("method"):
            result["compare"] = {**old["compare"], "engine": {"p90_ms": result["p90_ms"], "method": result["method"], "how": result["where"]}}
        report["latency"] = result
        stage = next(s for s in report["stages"] if s["name"] == "bench")
        new_metrics = latency_metrics(result, result["method"], result["where"]) if result["method"] == "measured" else \
            {f"latency.{k}": Metric(result[k], "ms", "estimated", result["where"]) for k in ("p50_ms", "p90_ms", "p99_ms")}
        had_decoder = TTFT_MS in stage.get("metrics", {})
        new_metrics.update(bench_stage_metrics(result, had_decoder))  # TTFT, decode tokens/s, peak memory: what their budgets read
        stage["metrics"] = {k: m.to_json() for k, m in new_metrics.items()}
        stage["status"] = stage["status"] if stage["status"] != "not run" else "ran"
        stage["notes"] = [*stage.get("notes", []), f"latency re-measured by `edgekd bench` at {result.get('measured_at', 'now')}"]
        verdicts = budgets.check("bench", new_metrics, Budgets.model_validate(report["profile"]["budgets"]))
        stage["verdicts"] = [v.to_json() for v in verdicts]
        report["failed_budgets"] = [v for s in report["stages"] for v in s["verdicts"] if v["status"] == "fail"]
        report["verdict"] = "fail" if report["failed_budgets"] else "pass"
        atomic_write_text(build_dir / BENCH_JSON, json.dumps(result))
        build_folder.record_file(report, "bench", build_dir, BENCH_JSON)  # the report's hash of bench.json stays true
        write_all(build_dir, report)
    return report
