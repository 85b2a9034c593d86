"""evaluate: the engine's quality on the held-out evaluation data."""
from __future__ import annotations

from pathlib import Path

from edgekd.backends import registry as backends
from edgekd.common.artefacts import ENGINE_JSON, STUDENT_INT8, STUDENT_ONNX
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.stage import Files, Outcome, Stage
from edgekd.stages.common import data_key


def run_evaluate(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).evaluate(ctx, inputs)


EVALUATE = Stage("evaluate", "accuracy of the engine on the held-out evaluation data",
                 (ENGINE_JSON, STUDENT_INT8, STUDENT_ONNX), (), ("onnxruntime", "onnxruntime-qnn"),
                 lambda c: {"target": c.target.model_dump(), **data_key(c)}, run_evaluate)
