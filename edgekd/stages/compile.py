"""compile: the backend builds the engine for the target's runtime and the deploy bundle."""
from __future__ import annotations

from pathlib import Path

from edgekd.backends import registry as backends
from edgekd.backends.ort.genai import add_tokenizer
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
from edgekd.stages.export import DECODE_ONNX


def run_compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    """The backend's compile from copies of the models stamped with the edgekd.* props (target included),
    so that what it copies or derives carries them; models it wrote without them are stamped after."""
    values = ctx.provenance_props("compile", target=True)
    with provenance.stamped_inputs(inputs, values) as stamped:
        outcome = _compile(ctx, stamped, out)
    provenance.restamp_outputs(out, values)
    if (out / BUNDLE_DIR).is_dir():  # text data: the bundle carries what its token ids mean
        outcome.notes.extend(save_tokenizer(ctx, out, f"{BUNDLE_DIR}/{TOKENIZER_DIR}"))
        # an x86 decoder's onnxruntime-genai folders get the tokenizer beside their config (edgekd.backends.ort.genai)
        given = [Path(ctx.model_path).parent] if hasattr(ctx, "model_path") else []
        outcome.notes.extend(add_tokenizer([out / ENGINE_DIR, out / BUNDLE_DIR], [out / BUNDLE_DIR / TOKENIZER_DIR, *given]))
    return outcome


def _compile(ctx: EngineContext, inputs: Files, out: Path) -> Outcome:
    outcome = backends.get(ctx.target.runtime).compile(ctx, inputs[STUDENT_INT8], inputs[STUDENT_ONNX], out, inputs.get(STUDENT_FUSED))
    if ctx.target.runtime == "qnn-htp" and DECODE_ONNX in inputs:
        outcome = _with_decode_graph(ctx, inputs[DECODE_ONNX], out, outcome)
    return outcome


def _with_decode_graph(ctx: EngineContext, decode: Path, out: Path, outcome: Outcome) -> Outcome:
    """The QNN HTP's static decode graph beside the prefill engine (edgekd.backends.qnn.decoder); a
    decode graph the HTP toolchain refuses is said in the notes, the prefill engine stands."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    from edgekd.backends.qnn.decoder import build_decode_context
    from edgekd.errors import EdgekdError

    try:
        metrics, notes = build_decode_context(ctx, decode, out, out / ENGINE_DIR, out / BUNDLE_DIR)
    except (EdgekdError, Fail, InvalidArgument, RuntimeException) as exc:
        return Outcome(outcome.metrics, [*outcome.notes, f"decode graph for the HTP NOT built: {str(exc).splitlines()[0]}"])
    return Outcome({**outcome.metrics, **metrics}, [*outcome.notes, *notes])


COMPILE = Stage("compile", "build the engine for the target's runtime and the deploy bundle (x86: tune the engine settings by measuring each)",
                (STUDENT_INT8, STUDENT_ONNX, optional(STUDENT_FUSED), optional(DECODE_ONNX)), (ENGINE_JSON, ENGINE_DIR + "/", BUNDLE_DIR + "/"), ("onnxruntime", "onnxruntime-qnn", "openvino", "nncf"),
                lambda c: {"target": c.target.model_dump(), "target_name": c.target_file.name, "qnn": c.qnn_config.model_dump() if c.target.qnn else None,
                           "host": c.host_fingerprint(), "tune": c.profile.recipe.tune.model_dump(), "quantize": c.quantize_config.model_dump(),
                           "budgets": c.profile.budgets.model_dump(), "positions": c.max_positions, **data_key(c)}, run_compile)
