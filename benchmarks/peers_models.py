"""The model files benchmarks/peers.py compares, all from one edgekd build of one student:
the build itself, optimum-onnx's ORTQuantizer INT8 model, a QOperator INT8 model with edgekd's
recipe (for the investigation) and a one-node Identity graph (ONNX Runtime's per-call floor)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.config.target import SessionConfig
from edgekd.stages.context import Context


@dataclass
class Build:
    folder: Path
    ctx: Context
    target: str
    engine: dict[str, Any]  # engine.json
    note: str  # how the build went (budgets)

    @property
    def engine_session(self) -> SessionConfig:
        """The session the engine was built for: engine.json's (tuned builds), else the target's [session]
        (the rule of edgekd/backends/ort/backend.py)."""
        return SessionConfig.model_validate(self.engine["session"]) if "session" in self.engine else self.ctx.target.session


def build_or_load(project: Path | None, profile: str, folder: Path, cache: Path, existing: Path | None,
                  log: Callable[[str], None]) -> Build:
    """Run `edgekd.api.build` for --target x86 into `folder` (stage cache `cache`), or take the
    finished build folder `existing`; a build that breaks a budget is still measured (its report says so)."""
    from edgekd.api import BuildFailed, build, resolve_inputs
    from edgekd.config.loading import ConfigSearch
    from edgekd.errors import ConfigError

    ctx = resolve_inputs("x86", profile, project, ConfigSearch())
    note = "built here by edgekd.api.build, every budget met"
    if existing is not None:
        folder = existing
        if not (folder / "engine.json").is_file():
            raise ConfigError(f"{folder} has no engine.json", "give a build folder made by `edgekd build --target x86`")
        note = f"existing build folder {folder}"
    else:
        try:
            build(target="x86", profile=profile, project=project, out=folder, cache_dir=cache, log=log)
        except BuildFailed as exc:
            if not (folder / "engine.json").is_file():
                raise ConfigError(f"the build stopped before its engine was built: {exc}",
                                  "use a profile without that budget (--profile FILE)") from None
            note = f"built here by edgekd.api.build; budget broken (still measured): {exc}"
    report = json.loads((folder / "report.json").read_text())
    return Build(folder, ctx, report["target"]["name"], json.loads((folder / "engine.json").read_text()), note)


def single_input(ctx: Context) -> str:
    """The name of the student's one input (the peers are timed and fed as single-input models)."""
    from edgekd.errors import ConfigError

    names = [spec.name for spec in ctx.task.inputs()]
    if len(names) != 1:
        raise ConfigError(f"{ctx.source}: task {ctx.task.name} has inputs {names}", "peers.py compares single-input students")
    return names[0]


def calibration_draw(ctx: Context) -> np.ndarray:
    """The calibration samples edgekd's quantize stage uses (the same seeded draw of the calib split)."""
    from edgekd.graph.quantize import calibration_rows

    return calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config)[single_input(ctx)]


def test_split(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """The test split's inputs and labels, as the evaluate stage reads them."""
    from edgekd.errors import DataError

    feeds = ctx.eval_feeds
    if feeds.labels is None:
        raise DataError(f"{ctx.source}: the test split has no labels", "peers.py measures accuracy on a labelled test split")
    return feeds.arrays[single_input(ctx)], feeds.labels


def optimum_int8(fp32_model: Path, samples: np.ndarray, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """optimum-onnx's documented static-quantization flow on a plain ONNX file: ORTQuantizer.from_pretrained
    (folder, file_name=...), AutoCalibrationConfig.minmax over a datasets.Dataset of the calibration
    samples, ORTQuantizer.fit, then quantize with AutoQuantizationConfig.avx512_vnni(is_static=True)."""
    from datasets import Dataset
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import (
        AutoCalibrationConfig,
        AutoQuantizationConfig,
    )

    src = workdir / "optimum_in"
    src.mkdir(parents=True)
    shutil.copy(fp32_model, src / fp32_model.name)
    quantizer = ORTQuantizer.from_pretrained(src, file_name=fp32_model.name)
    input_name = _input_name(fp32_model)
    dataset = Dataset.from_dict({input_name: samples}).with_format("numpy")
    calibration = AutoCalibrationConfig.minmax(dataset)
    qconfig = AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=True)
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints progress
        ranges = quantizer.fit(dataset=dataset, calibration_config=calibration, onnx_augmented_model_name=workdir / "optimum_augmented.onnx")
        out_dir = quantizer.quantize(qconfig, save_dir=workdir / "optimum_out", calibration_tensors_range=ranges)
    model = Path(out_dir) / f"{fp32_model.stem}_quantized.onnx"
    recipe = {"preset": "AutoQuantizationConfig.avx512_vnni(is_static=True, per_channel=True)", "format": str(qconfig.format),
              "activations": f"{qconfig.activations_dtype} symmetric={qconfig.activations_symmetric}",
              "weights": f"{qconfig.weights_dtype} symmetric={qconfig.weights_symmetric}", "per_channel": qconfig.per_channel,
              "reduce_range": qconfig.reduce_range, "operators_to_quantize": list(qconfig.operators_to_quantize),
              "calibration": f"AutoCalibrationConfig.minmax, ORTQuantizer.fit on {len(samples)} calibration samples (batch 1)"}
    return model, recipe


def qoperator_int8(ctx: Context, fp32_model: Path, samples: np.ndarray, out: Path) -> Path:
    """edgekd's quantization recipe for this target, QOperator format (QLinearConv etc.) instead of QDQ."""
    from edgekd.graph.quantize import quantize_int8

    quantize_int8(fp32_model, out, {_input_name(fp32_model): samples}, ctx.project.quantize, ctx.quant_recipe, quant_format="qoperator")
    return out


def identity_model(like: Path, out: Path) -> Path:
    """A graph with a single Identity node and the same input as `like`: what ONNX Runtime's
    session.run costs from Python with (almost) no compute."""
    import onnx
    from onnx import helper

    src = onnx.load(str(like))
    graph_in = src.graph.input[0]
    out_info = helper.make_tensor_value_info("output", graph_in.type.tensor_type.elem_type, None)
    graph = helper.make_graph([helper.make_node("Identity", [graph_in.name], ["output"])], "floor", [graph_in], [out_info])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = src.ir_version
    onnx.save(model, str(out))
    return out


def _input_name(model: Path) -> str:
    import onnx

    return onnx.load(str(model), load_external_data=False).graph.input[0].name
