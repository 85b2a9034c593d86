"""What several stages share: the student the search chose, the teacher a student learns from, and the
quality metrics of a graph on the evaluation data."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.common.artefacts import (
    TEACHER_WEIGHTS,
)
from edgekd.common.toolchain import version
from edgekd.distill.sources import teacher_source
from edgekd.pipeline import evaluation
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages.context import Context


def torch_where() -> str:
    return f"torch {version('torch')} eager, CPU"


def describe_factory(factory: str, args: dict[str, Any]) -> str:
    """How a model is made, for notes: `factory(args)`, or where a Hugging Face model comes from."""
    from edgekd.distill import hf_models

    return hf_models.describe(args["spec"]) if factory == hf_models.FACTORY else f"{factory}({args})"


def build_student(ctx: Context, student_json: Path) -> tuple[Any, str]:
    """The (untrained) student module the search stage chose, and its description."""
    choice = json.loads(student_json.read_text())
    key = "student.search" if "search" in choice else "student.hf" if ctx.project.student.hf else "student.factory"
    return ctx.build_model_from(choice["factory"], choice["args"], key), describe_factory(choice["factory"], choice["args"])


def teacher_of_student(ctx: Context, inputs: dict[str, Path]) -> TeacherSource:
    """The teacher, or the last link of the teacher-assistant chain."""
    from edgekd.common.fsutil import sha256_file
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.weights import load_weights

    chain = json.loads(inputs["assistant.json"].read_text()) if "assistant.json" in inputs else {"chain": []}
    if not chain["chain"]:
        return teacher_source(ctx, inputs.get(TEACHER_WEIGHTS))
    module = ctx.build_model_from(chain["factory"], chain["args"], "teacher.assistants")
    weights = inputs["assistant.safetensors"]
    load_weights(module, weights, "assistant")
    return TorchTeacher(module, sha256_file(weights), f"torch module {chain['factory']}({chain['args']}), the last teacher assistant",
                        task=ctx.task)



def quality_metric(ctx: EngineContext, outputs: np.ndarray, where: str) -> Metric:
    """The task's metric (ctx.metric: accuracy, perplexity) of `outputs` on the build's evaluation
    data; written as `<prefix>.<ctx.metric.name>`."""
    return evaluation.quality_metric(ctx.metric, ctx.eval_feeds, outputs, where, ctx.task)


def metric_key(ctx: EngineContext, prefix: str) -> str:
    """The metrics' name for the task metric of `prefix` (teacher, student, onnx_fp32, int8, engine)."""
    return f"{prefix}.{ctx.metric.name}"


def data_key(ctx: EngineContext) -> dict[str, Any]:
    return {"data": ctx.data_fingerprint, "inputs": ctx.model_inputs.key()}


def save_tokenizer(ctx: EngineContext, out: Path, relative: str) -> list[str]:
    """Text data: the data's tokenizer saved beside the model (save_pretrained: what the engine's token
    ids mean, loadable with AutoTokenizer.from_pretrained) in the stage's folder `out` at `relative`; a
    note saying so. Nothing for other data."""
    from edgekd.common.toolchain import quiet

    tokenizer = getattr(getattr(ctx, "data_source", None), "tokenizer", None)  # `edgekd compile` has no data source
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        return []
    with quiet():
        tokenizer.save_pretrained(str(out / relative))
    return [f"tokenizer saved with the build in {relative}/ (data.tokenizer {ctx.project.data.tokenizer}, "  # type: ignore[attr-defined]
            f"{len(tokenizer)} tokens; transformers' AutoTokenizer.from_pretrained loads it)"]
