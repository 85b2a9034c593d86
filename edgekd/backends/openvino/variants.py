"""The OpenVINO candidates of the x86 tuner: the fp32 graph as OpenVINO reads it, and NNCF INT8 from
the quantize stage's calibration rows. Either may be left out, with a note saying why."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

from edgekd.backends.openvino import runtime
from edgekd.backends.openvino.quantize import NncfRecipe, quantize_nncf

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

NNCF_FORMAT = "nncf"  # the quant_format of NNCF INT8 rows
VariantRow = tuple[str, "str | None", Path, str]  # precision, quant format, model file, how it was made


def _first_line(exc: BaseException) -> str:
    """The informative part of an OpenVINO/NNCF error: its first line that is not an "Exception from
    <source file>" location, and its last line (OpenVINO's own reason) where that differs, <= 400 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.strip().startswith("Exception from")]
    if not lines:
        return type(exc).__name__
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= 400 else text[:397] + "..."


def _nncf_variant(ctx: Context, fp32: Path, out: Path) -> VariantRow:
    import onnx

    from edgekd.graph.quantize import calibration_rows
    from edgekd.graph.transformer import is_transformer

    recipe = NncfRecipe(transformer=is_transformer(onnx.load(str(fp32), load_external_data=False)))
    rows = calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # NNCF's progress bars
        files, how = quantize_nncf(fp32, rows, out / "openvino_int8_nncf.xml", recipe)
    return "int8", NNCF_FORMAT, files[0], how + ", the quantize stage's calibration rows"


def trial_run(ctx: Context, model: Path) -> str | None:
    """Why OpenVINO cannot run `model` on the first evaluation sample (its CPU plugin refuses some graphs
    ONNX Runtime runs, e.g. an AveragePool whose kernel exceeds its input, ceil_mode), or None."""
    from edgekd.backends.openvino.settings import OpenVinoSettings

    try:
        runtime.OpenVinoRunner(model, OpenVinoSettings()).run(ctx.eval_feeds.first())
    except RuntimeError as exc:  # OpenVINO's shape-inference, compile and infer errors
        return _first_line(exc)
    return None


def openvino_variants(ctx: Context, fp32: Path, out: Path) -> tuple[list[VariantRow], list[str]]:
    """The OpenVINO model variants the target's [tune] precisions allow, from the given fp32 ONNX graph
    (never the fused one: its ONNX Runtime contrib ops are not ONNX), and notes on those left out."""
    reason = runtime.missing()
    if reason is not None:
        return [], [reason]
    fp32, rewrites = _legal(ctx, fp32, out)
    try:
        runtime.read(fp32)
    except Exception as exc:  # noqa: BLE001  (OpenVINO's frontend raises its own error types; the reason is kept in the note)
        return [], [f"OpenVINO candidates left out: OpenVINO cannot read {fp32.name} ({_first_line(exc)})"]
    refused = trial_run(ctx, fp32)
    if refused is not None:
        return [], [f"OpenVINO candidates left out: OpenVINO's CPU plugin cannot run {fp32.name} ({refused})"]
    precisions, variants, notes = ctx.target.tune.precisions, [], []
    if "int8" in precisions:
        try:
            int8 = _nncf_variant(ctx, fp32, out)
        except Exception as exc:  # noqa: BLE001  (NNCF raises many types; the failure is reported in the tuning record)
            notes.append(f"openvino-int8-nncf left out: nncf.quantize failed ({_first_line(exc)})")
        else:
            refused = trial_run(ctx, int8[2])
            variants, notes = (variants + [int8], notes) if refused is None else \
                (variants, notes + [f"openvino-int8-nncf left out: OpenVINO's CPU plugin cannot run NNCF's IR ({refused})"])
    if "fp32" in precisions:
        source = f"the given fp32 graph after {len(rewrites)} exact rewrite(s) ({'; '.join(rewrites)})" if rewrites else "the given fp32 graph"
        variants.append(("fp32", None, fp32, f"{source} {fp32.name}, read by OpenVINO's ONNX frontend"))
    return variants, notes


def _legal(ctx: Context, fp32: Path, out: Path) -> tuple[Path, list[str]]:
    """`fp32` after edgekd.graph.legalize's exact rewrites (written into `out` where there are any: OpenVINO's
    CPU plugin refuses HF EfficientNet's whole-map AveragePool, ceil_mode, that GlobalAveragePool computes
    the same), and a note per rewrite."""
    from edgekd.graph.legalize import legalize

    legal = out / f"openvino_{fp32.stem}_legal.onnx"
    rewrites = legalize(fp32, legal, ctx.model_inputs)
    if not rewrites:
        legal.unlink()
        return fp32, []
    return legal, rewrites
