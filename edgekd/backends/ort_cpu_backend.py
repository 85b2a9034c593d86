"""x86 (ONNX Runtime CPU): the engine is the INT8 graph as ORT optimizes it for this host; accuracy
and latency are measured here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.backends import onnxruntime as ortb
from edgekd.backends.base import BUNDLE_DIR, ENGINE_DIR, load_engine, write_engine_json
from edgekd.deploy.ort_bundle import write_ort_bundle
from edgekd.results import Metric

if TYPE_CHECKING:
    from edgekd.context import Context
    from edgekd.stages import Outcome

ENGINE_FILE = "engine.onnx"


class OrtCpuBackend:
    runtime = "onnxruntime-cpu"

    def compile(self, ctx: Context, int8_model: Path, out: Path) -> Outcome:
        from edgekd.stages import Outcome, size_metric

        cfg = ctx.target.session
        (out / ENGINE_DIR).mkdir()
        engine = out / ENGINE_DIR / ENGINE_FILE
        ortb.open_session(int8_model, cfg, optimized_model_path=engine)
        # the bundle carries the portable INT8 graph: the device's ONNX Runtime optimizes it for its own CPU
        write_ort_bundle(out / BUNDLE_DIR, self.runtime, [int8_model], ctx.target_file.name, (1, *ctx.data.input_shape),
                         session=cfg.model_dump())
        write_engine_json(out, self.runtime, built_here=True, engine_file=ENGINE_FILE)
        notes = [f"engine = the INT8 graph as {ortb.runtime_description(cfg)} optimizes it"]
        if cfg.graph_optimization_level == "all":
            notes.append("level 'all' adds layout/hardware-specific kernels: the engine is for CPUs like this host's")
        return Outcome({"engine.size_mb": size_metric(engine, f"{ENGINE_DIR}/{ENGINE_FILE}")}, notes)

    def evaluate(self, ctx: Context, inputs: dict[str, Path]) -> Outcome:
        from edgekd.stages import Outcome, accuracy_metric

        engine_dir, engine = load_engine(inputs)
        cfg = ctx.target.session
        logits = ortb.predict(ortb.open_session(engine_dir / engine["engine_file"], cfg), ctx.data.test.x)
        return Outcome({"engine.accuracy": accuracy_metric(ctx, logits, ortb.runtime_description(cfg))})

    def bench(self, ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
        from edgekd.bench import measure
        from edgekd.stages import Outcome
        from edgekd.toolchain import cpu_model

        engine_dir, engine = load_engine(inputs)
        cfg = ctx.target.session
        result = measure(engine_dir / engine["engine_file"], ctx.data.test.x[:1], cfg, ctx.profile.recipe.bench, out)
        (out / "bench.json").write_text(json.dumps({**result, "method": "measured", "where": f"this host ({cpu_model()})"}))
        where = (f"batch 1 on this host ({cpu_model()}), {ortb.runtime_description(cfg)}, "
                 f"{result['runs']} timed runs after warm-up, in a separate process")
        return Outcome(latency_metrics(result, "measured", where))


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
