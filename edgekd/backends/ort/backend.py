"""x86 (ONNX Runtime CPU): the engine is the INT8 graph as ORT optimizes it for this host; accuracy
and latency are measured here."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.backends.base import (
    BUNDLE_DIR,
    ENGINE_DIR,
    load_engine,
    register,
    write_engine_json,
)
from edgekd.backends.ort import session as ortb
from edgekd.backends.runners import (
    ONNXRUNTIME,
    OPENVINO,
    Settings,
    describe,
    predict,
    settings_from,
    threads,
)
from edgekd.common.artefacts import BENCH_JSON, STUDENT_ONNX
from edgekd.config.target import SessionConfig
from edgekd.deploy.ort_bundle import write_ort_bundle
from edgekd.graph.decoder import complete_for, has_kv_cache, with_past
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context
    from edgekd.pipeline.stage import Outcome

ENGINE_FILE = "engine.onnx"


@register("onnxruntime-cpu")
class OrtCpuBackend:

    def compile(self, ctx: Context, int8_model: Path, fp32_model: Path, out: Path, fused_fp32: Path | None = None) -> Outcome:
        from edgekd.backends.ort.tune import candidate_count, tune
        from edgekd.pipeline.stage import Outcome, size_metric

        (out / ENGINE_DIR).mkdir()
        model, cfg, tuning, notes, precision = int8_model, ctx.target.session, None, [], "int8"
        engine = out / ENGINE_DIR / ENGINE_FILE
        # tuning's model variants and worker files live in a scratch folder that goes with this block
        with tempfile.TemporaryDirectory(dir=out, prefix="tune-") as work:
            if ctx.profile.recipe.tune.enabled and candidate_count(ctx) > 1:
                tuning, model = tune(ctx, fp32_model, int8_model, Path(work), fused_fp32)
                best = tuning["rows"][tuning["chosen"]]
                if best.get("runtime") == OPENVINO:
                    return self._compile_openvino(ctx, model, tuning, out)
                cfg, precision = SessionConfig.model_validate(best["session"]), best["precision"]
                judged = (f"{ctx.metric.name} {best[ctx.metric.name]:.4g}, top-1 agreement with fp32 {best['accuracy']:.2f}%"
                          if best.get(ctx.metric.name) is not None else f"accuracy {best['accuracy']:.2f}%")
                notes.append(f"tuned: {best['variant']}, {best['threads']} thread(s), optimization '{cfg.graph_optimization_level}', "
                             f"{cfg.execution_mode}: p90 {best['p90_ms']:.4g} ms, {judged} ({tuning['reason']})")
                notes.extend([f"{best['variant']} is {tuning['variants'][best['variant']]}", *tuning["left_out"]])
            ortb.open_session(model, cfg, optimized_model_path=engine)
            inputs = with_past(ctx.model_inputs, model)  # a decoder's past key/values (length 0) too
            # the bundle carries the portable graph: the device's ONNX Runtime optimizes it for its own CPU
            write_ort_bundle(out / BUNDLE_DIR, self.runtime, [model], ctx.target_file.name, inputs,
                             session=cfg.model_dump())
            if has_kv_cache(model):  # a decoder: onnxruntime-genai folders (edgekd.backends.ort.genai)
                from edgekd.backends.ort.genai import write_genai_folders

                # engine/ (this host) gets the resolved thread count edgekd's runner uses (genai's default, ONNX Runtime's
                # physical-core count, ran the decode step 1.5x slower on this 2-vCPU host); the portable bundle its device's default
                notes.extend(write_genai_folders(ctx, model, [(out / ENGINE_DIR, ENGINE_FILE, threads(cfg)),
                                                              (out / BUNDLE_DIR, model.name, cfg.intra_op_num_threads)]))
        write_engine_json(out, self.runtime, inputs=inputs.to_json(), built_here=True, engine_file=ENGINE_FILE, session=cfg.model_dump(),
                          precision=precision, source_model=model.name, tuning=tuning)
        notes.append(f"engine = the {precision} graph {model.name} as {ortb.runtime_description(cfg)} optimizes it")
        if cfg.graph_optimization_level == "all":
            notes.append("level 'all' adds layout/hardware-specific kernels: the engine is for CPUs like this host's")
        return Outcome({"engine.size_mb": size_metric(engine, f"{ENGINE_DIR}/{ENGINE_FILE}")}, notes)

    def _compile_openvino(self, ctx: Context, model: Path, tuning: dict[str, Any], out: Path) -> Outcome:
        """The tuner chose an OpenVINO candidate: its IR is the engine (edgekd.backends.openvino.engine),
        the bundle carries it with the settings it was timed with."""
        from edgekd.backends.openvino.engine import size_mb as ir_size_mb
        from edgekd.backends.openvino.engine import write_engine
        from edgekd.backends.openvino.settings import OpenVinoSettings
        from edgekd.pipeline.stage import Outcome

        best = tuning["rows"][tuning["chosen"]]
        settings = OpenVinoSettings.model_validate(best["session"])
        files, how = write_engine(model, out / ENGINE_DIR)
        inputs = ctx.model_inputs
        write_ort_bundle(out / BUNDLE_DIR, OPENVINO, files, ctx.target_file.name, inputs, openvino=settings.model_dump())
        write_engine_json(out, OPENVINO, inputs=inputs.to_json(), built_here=True, engine_file=files[0].name,
                          session=settings.model_dump(), precision=best["precision"], source_model=model.name, tuning=tuning)
        notes = [(f"tuned: {best['variant']} on {describe(OPENVINO, settings)}: p90 {best['p90_ms']:.4g} ms, accuracy "
                  f"{best['accuracy']:.2f}% ({tuning['reason']})"), f"{best['variant']} is {tuning['variants'][best['variant']]}",
                 *tuning["left_out"], f"engine = {how}; it runs on OpenVINO's CPU plugin, not ONNX Runtime (engine.json runtime 'openvino')"]
        size = Metric(ir_size_mb(files), "MB", "measured", f"file size of {ENGINE_DIR}/{files[0].name} + {files[1].name} (MB = 10^6 bytes)")
        return Outcome({"engine.size_mb": size}, notes)

    def evaluate(self, ctx: Context, inputs: dict[str, Path]) -> Outcome:
        from edgekd.backends.quality import quality_metrics
        from edgekd.pipeline.stage import Outcome

        engine_dir, engine = load_engine(inputs)
        runtime, cfg = engine_runtime(ctx, engine)
        outputs = predict(runtime, engine_dir / engine["engine_file"], ctx.eval_feeds.arrays, cfg)
        where = f"{engine.get('precision', 'int8')} engine, {describe(runtime, cfg)}"
        return Outcome(quality_metrics(ctx, "engine", outputs, inputs[STUDENT_ONNX], where))

    def bench(self, ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
        from edgekd.common.toolchain import cpu_model
        from edgekd.perf.measure import measure
        from edgekd.pipeline.stage import Outcome

        engine_dir, engine = load_engine(inputs)
        runtime, cfg = engine_runtime(ctx, engine)
        bench = ctx.profile.recipe.bench
        path = engine_dir / engine["engine_file"]
        inputs = with_past(ctx.model_inputs, path) if runtime == ONNXRUNTIME else ctx.model_inputs
        result = measure(path, complete_for(inputs, ctx.eval_feeds.first(bench.offline_max_batch)), inputs, cfg, bench, out)
        where = (f"batch 1 on this host ({cpu_model()}), {describe(runtime, cfg)}, "
                 f"{result['runs']} timed runs after warm-up, in a separate process")
        (out / BENCH_JSON).write_text(json.dumps({**result, "method": "measured", "where": where}))
        return Outcome(latency_metrics(result, "measured", where))


def engine_session(ctx: Context, engine: dict[str, Any]) -> SessionConfig:
    """The session settings the engine was built for: the tuned ones, else the target's [session]."""
    return SessionConfig.model_validate(engine["session"]) if "session" in engine else ctx.target.session


def engine_runtime(ctx: Context, engine: dict[str, Any]) -> tuple[str, Settings]:
    """Which runtime runs the engine (edgekd.backends.runners: OpenVINO where engine.json says so) and
    the settings it was built for."""
    if engine.get("runtime") == OPENVINO:
        return OPENVINO, settings_from(OPENVINO, engine["session"])
    return ONNXRUNTIME, engine_session(ctx, engine)


def latency_metrics(result: dict[str, Any], method: str, where: str) -> dict[str, Metric]:
    """The latency numbers of a bench result as metrics, all with the same provenance."""
    metrics = {f"latency.{k}": Metric(result[k], "ms", method, where) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms") if k in result}
    if "throughput_per_s" in result:
        metrics["latency.throughput_per_s"] = Metric(result["throughput_per_s"], "1/s", method, "1000 / mean latency at batch 1")
    if "intra_op_threads" in result:
        metrics["latency.threads"] = Metric(result["intra_op_threads"], "", method, "intra-op threads of the session")
    for key, how in (("peak_rss_mb", "peak resident memory of the whole bench process (Python + runtime + engine), /proc/self/status VmHWM"),
                     ("engine_rss_mb", "resident memory added by loading and running the engine: /proc/self/status VmRSS after timing minus before the session")):
        if key in result:
            value = result[key]
            metrics[f"latency.{key}"] = (Metric(value, "MiB", method, how) if value is not None
                                         else Metric(None, "MiB", "not available", "this OS does not expose it"))
    return metrics
