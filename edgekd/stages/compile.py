"""compile: the backend builds the engine for the target's runtime and the deploy bundle."""
from __future__ import annotations

from pathlib import Path

from edgekd.backends import registry as backends
from edgekd.common.artefacts import (
    BUNDLE_DIR,
    ENGINE_DIR,
    ENGINE_JSON,
    STUDENT_FUSED,
    STUDENT_INT8,
    STUDENT_ONNX,
    TOKENIZER_DIR,
    optional,
)
from edgekd.graph import provenance
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.stage import Files, Outcome, Stage
from edgekd.stages.common import data_key, save_tokenizer


def run_compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    """The backend's compile from copies of the models stamped with the edgekd.* props (target included),
    so that what it copies or derives carries them; models it wrote without them are stamped after."""
    values = ctx.provenance_props("compile", target=True)
    with provenance.stamped_inputs(inputs, values) as stamped:
        outcome = _compile(ctx, stamped, out)
    provenance.restamp_outputs(out, values)
    if (out / BUNDLE_DIR).is_dir():  # text data: the bundle carries what its token ids mean
        outcome.notes.extend(save_tokenizer(ctx, out, f"{BUNDLE_DIR}/{TOKENIZER_DIR}"))
    return outcome


def _compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    return backends.get(ctx.target.runtime).compile(ctx, inputs[STUDENT_INT8], inputs[STUDENT_ONNX], out, inputs.get(STUDENT_FUSED))


COMPILE = Stage("compile", "build the engine for the target's runtime and the deploy bundle (x86: tune the engine settings by measuring each)",
                (STUDENT_INT8, STUDENT_ONNX, optional(STUDENT_FUSED)), (ENGINE_JSON, ENGINE_DIR + "/", BUNDLE_DIR + "/"), ("onnxruntime", "onnxruntime-qnn"),
                lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "qnn": c.qnn_config.model_dump() if c.target.qnn else None,
                           "host": c.host_fingerprint(), "tune": c.profile.recipe.tune.model_dump(), "quantize": c.quantize_config.model_dump(),
                           "budgets": c.profile.budgets.model_dump(), **data_key(c)}, run_compile)
