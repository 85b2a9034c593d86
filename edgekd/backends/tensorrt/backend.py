"""NVIDIA Jetson (TensorRT). Where TensorRT and a CUDA device are present the engine is built here
with the TensorRT Python API and measured with trtexec. Where they are absent (every machine of
ours) the build produces the deploy bundle (Q/DQ ONNX, build_engine.sh for the target's TensorRT
major version, the device-side runner), measures host-side accuracy on the Q/DQ graph with ONNX
Runtime (labelled so) and estimates latency from the target's device figures."""
from __future__ import annotations

import json
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
from edgekd.common.artefacts import BENCH_JSON, STUDENT_INT8, STUDENT_ONNX

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context
    from edgekd.pipeline.stage import Outcome

ENGINE_FILE = "model.plan"


def decoder_inputs(ctx: Context, model: Path) -> tuple[Any, Any]:
    """The model's inputs (a KV-cache decoder's past key/values too) and, for such a decoder, its
    prefill/decode shapes: P = recipe.bench.prompt_tokens, context P + recipe.bench.decode_tokens."""
    from edgekd.graph.decoder import decoder_shapes, with_past

    inputs = with_past(ctx.model_inputs, model)
    bench = ctx.profile.recipe.bench
    return inputs, decoder_shapes(inputs, bench.prompt_tokens, bench.prompt_tokens + bench.decode_tokens)


@register("tensorrt")
class TensorRTBackend:

    def compile(self, ctx: Context, int8_model: Path, fp32_model: Path, out: Path, fused_fp32: Path | None = None) -> Outcome:
        from edgekd.backends.tensorrt import build as trt_backend
        from edgekd.deploy.tensorrt_bundle import write_bundle
        from edgekd.pipeline.stage import Outcome, size_metric

        cfg = ctx.target.tensorrt
        inputs, decoder = decoder_inputs(ctx, int8_model)
        write_bundle(int8_model, out / BUNDLE_DIR, cfg, ctx.target_file.name, inputs, decoder)
        (out / ENGINE_DIR).mkdir()
        if trt_backend.available():  # runs only on a device with TensorRT and CUDA
            engine = out / ENGINE_DIR / ENGINE_FILE
            trt_backend.build_engine(int8_model, engine, cfg, out / ENGINE_DIR / "timing.cache", inputs=inputs)
            write_engine_json(out, self.runtime, inputs=inputs.to_json(), built_here=True, engine_file=ENGINE_FILE)
            return Outcome({"engine.size_mb": size_metric(engine, f"{ENGINE_DIR}/{ENGINE_FILE}")},
                           [f"TensorRT engine built here for {cfg.device_description}"])
        write_engine_json(out, self.runtime, inputs=inputs.to_json(), built_here=False, engine_file=None)
        bundle_size = size_metric(out / BUNDLE_DIR / "model.onnx", f"{BUNDLE_DIR}/model.onnx (the Q/DQ ONNX the engine is built from)")
        return Outcome({"engine.size_mb": bundle_size}, [
            "engine NOT built here: TensorRT and a CUDA device are absent on this host; "
            f"run {BUNDLE_DIR}/build_engine.sh on the {ctx.target.device.name} (TensorRT {cfg.trt_major}.x), "
            f"or `edgekd bench BUILD --device ssh://user@jetson`",
            f"the engine is specific to the device's GPU, TensorRT version and build options ({cfg.device_description})"])

    def evaluate(self, ctx: Context, inputs: dict[str, Path]) -> Outcome:
        from edgekd.backends.quality import quality_metrics
        from edgekd.pipeline.stage import Outcome

        _, engine = load_engine(inputs)
        outputs = ortb.predict_file(inputs[STUDENT_INT8], ctx.eval_feeds.arrays)
        where = (f"host-side: {ortb.runtime_description()} on the Q/DQ graph the engine is built from "
                 "(not the TensorRT engine, which runs only on the device)")
        notes = [] if not engine["built_here"] else ["the engine was built here, but its accuracy is measured on the Q/DQ graph"]
        return Outcome(quality_metrics(ctx, "engine", outputs, inputs[STUDENT_ONNX], where), notes)

    def bench(self, ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
        from edgekd.backends.estimated import estimated_bench
        from edgekd.backends.ort.backend import latency_metrics
        from edgekd.pipeline.stage import Outcome

        engine_dir, engine = load_engine(inputs)
        if not engine["built_here"]:
            return estimated_bench(ctx, inputs, out, "the engine was not built here (no TensorRT/CUDA device)")
        from edgekd.backends.tensorrt import build as trt_backend

        measured = trt_backend.measure_engine(engine_dir / engine["engine_file"], ctx.target.tensorrt, out, ctx.model_inputs)
        lat = measured["summary"]["latency"]
        result = {"p50_ms": lat["median_ms"], "p90_ms": lat["p90_ms"], "p99_ms": lat["p99_ms"], "mean_ms": lat["mean_ms"],
                  "min_ms": lat["min_ms"], "max_ms": lat["max_ms"], "throughput_per_s": measured["summary"]["throughput_qps"],
                  "samples_ms": measured["samples_ms"], "runs": len(measured["samples_ms"]), "batch": 1,
                  "method": "measured", "where": measured["how"]}
        (out / BENCH_JSON).write_text(json.dumps(result))
        return Outcome(latency_metrics(result, "measured", measured["how"]))
