"""Op support: for every node of a model, whether the target's runtime/accelerator runs it, and if
not why and where it falls back; with the share of nodes and of MACs that fall back. The model's
inputs are resolved first (edgekd.graph.resolve: --shape, the model, optimum's export config,
task-aware defaults), and every target sees the model at those shapes.

- onnxruntime-cpu: the CPU execution provider is the device; ONNX Runtime's own session placement
  is read back (a node no provider can run fails the session, reported as unsupported).
- tensorrt: TensorRT's ONNX parser rules (rules_tensorrt.py), and DLA layer rules for DLA targets
  (rules_dla.py), for the TensorRT release the target names; static rules from NVIDIA's docs,
  nothing runs TensorRT here. The inputs are pinned to their resolved shapes (one optimization
  profile, min = opt = max), so DLA's static-shape rule and the shape-dependent rules see them.
- qnn-htp: the real placement ONNX Runtime's QNN execution provider makes (HTP emulated on x86).
  The HTP runs only quantized graphs: a float model is quantized for the target first
  (backends.qnn.quantize_for_htp), calibrated on the samples given or on a few generated feeds,
  and the report says so; the nodes reported are then the quantized graph's (what the HTP runs:
  qnn_preprocess_model folds constants and fuses Erf-GELU, and quantization adds Q/DQ pairs, so
  the float model's nodes do not map one to one). A model already in QDQ form is placed as is.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.analysis.support_types import NodeSupport, SupportReport
from edgekd.common.tempdirs import temp_dir
from edgekd.config.target import Target
from edgekd.errors import EdgekdError
from edgekd.graph.inputs import ModelInputs
from edgekd.graph.quant_rules import has_qdq

GENERATED_CALIB_ROWS = 4  # a handful of generated feeds: enough for Q/DQ ranges that let the EP place the graph
MAX_CALIB_ROWS = 64  # check places the graph; more calibration rows change the ranges, not where nodes run
_JETPACK_TRT = {(6, 1): (10, 3), (6, 2): (10, 3)}  # ../shared/HARDWARE.md "Toolchains": JetPack 6.1/6.2 ship 10.3


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cpu_support(model_path: Path, target_name: str) -> SupportReport:
    import onnx

    from edgekd.backends.ort import session as ortb

    model = onnx.load(str(model_path), load_external_data=False)
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]
    try:
        ortb.open_session(model_path)
        nodes = [NodeSupport(name, n.op_type, "accelerator", "") for name, n in zip(names, model.graph.node)]
    except Exception as exc:  # ORT names the node/op it has no kernel for in the message
        why = f"ONNX Runtime CPU cannot load the model: {_first_line(exc)}"
        nodes = [NodeSupport(name, n.op_type, "unsupported", why) for name, n in zip(names, model.graph.node)]
    return SupportReport(target_name, ortb.runtime_description(), "none (the CPU runs everything)", nodes)


def _trt_version(target: Target) -> tuple[int, int]:
    """The TensorRT release the rules are for: the one the target's JetPack ships, else the oldest
    release of its major that the target builds with."""
    from edgekd.config.tensorrt import version_tuple

    trt = target.tensorrt
    if trt.trt_major == 10 and trt.jetpack and version_tuple(trt.jetpack)[:2] in _JETPACK_TRT:
        return _JETPACK_TRT[version_tuple(trt.jetpack)[:2]]
    major, minor, _ = version_tuple(trt.min_trt_version)
    return major, minor


def _tensorrt_support(model_path: Path, target_name: str, target: Target, inputs: ModelInputs) -> SupportReport:
    import onnx

    from edgekd.analysis.rules_tensorrt import check_tensorrt
    from edgekd.graph.shapes import infer_shapes

    trt = target.tensorrt
    dla = trt.dla_core is not None
    version = _trt_version(target)
    inferred = infer_shapes(onnx.load(str(model_path)), inputs)  # inputs fixed, every shape found in value_info
    nodes = check_tensorrt(inferred.model, dla=dla, gpu_fallback=trt.gpu_fallback, trt_major=trt.trt_major,
                           input_shapes=inputs.shapes(), trt_version=version)
    release = f"TensorRT {version[0]}.{version[1]}"
    accelerator = f"DLA core {trt.dla_core} ({release} rules)" if dla else f"GPU ({release} ONNX parser rules)"
    fallback = "GPU (GPU fallback)" if dla and trt.gpu_fallback else "none: the build fails"
    notes = [f"static rules for {release} (onnx-tensorrt operators.md and changelog"
             + (", TensorRT's DLA layer restrictions" if dla else "") + "): nothing here ran TensorRT",
             f"inputs pinned to {inputs.describe()} (one optimization profile, min = opt = max)"]
    if inferred.unknown:
        notes.append(f"{len(inferred.unknown)} tensors have no static shape at these inputs "
                     f"({', '.join(u['tensor'] for u in inferred.unknown[:3])}...): rules that need their shapes say so")
    return SupportReport(target_name, accelerator, fallback, nodes, notes)


def _is_static(model: Any) -> bool:
    values = [*model.graph.input, *model.graph.output]
    return all(d.HasField("dim_value") and d.dim_value > 0 for v in values for d in v.type.tensor_type.shape.dim)


def _quantize_for_placement(model_path: Path, out: Path, target_name: str, target: Target, inputs: ModelInputs,
                            calib: Mapping[str, np.ndarray] | None) -> str:
    """Quantize a float model for the HTP (uint8/uint16 QDQ, static shapes); returns how, for the report."""
    from edgekd.backends.qnn.htp import quantize_for_htp
    from edgekd.graph.feeds import random_feedset

    if calib:
        given = len(next(iter(calib.values())))
        feeds = {name: array[:MAX_CALIB_ROWS] for name, array in calib.items()}
        how = f"on {min(given, MAX_CALIB_ROWS)} of the {given} calibration samples given"
    else:
        feeds = random_feedset(inputs, GENERATED_CALIB_ROWS).arrays
        how = f"on {GENERATED_CALIB_ROWS} generated feeds: fit for placement, not for accuracy"
    try:
        quantize_for_htp(model_path, out, feeds, target.qnn, "minmax", inputs)
    except EdgekdError:
        raise
    except Exception as exc:  # onnxruntime.quantization's own errors on graphs it cannot quantize
        raise EdgekdError(f"{model_path}: could not be quantized for the {target.qnn.describe()}: {_first_line(exc)}",
                          "quantize it to QDQ yourself (uint8/uint16 activations, uint8 weights) and check that "
                          "model") from exc
    return (f"{model_path.name} has no Q/DQ nodes and the HTP runs only quantized graphs, so it was quantized for "
            f"{target_name} first (edgekd's HTP recipe: qnn_preprocess_model, {target.qnn.activation_type} activations, "
            f"{target.qnn.weight_type} weights, minmax) at inputs {inputs.describe()}, calibrated {how}")


def _qnn_support(model_path: Path, target_name: str, target: Target, inputs: ModelInputs,
                 calib: Mapping[str, np.ndarray] | None, tmp: Path) -> tuple[SupportReport, Path]:
    import onnx

    from edgekd.backends.qnn.htp import fix_shapes, placement

    model = onnx.load(str(model_path), load_external_data=False)
    notes = []
    placed = model_path
    if not has_qdq(model):
        placed = tmp / "htp_qdq.onnx"
        notes.append(_quantize_for_placement(model_path, placed, target_name, target, inputs, calib))
        quantized = onnx.load(str(placed), load_external_data=False)
        notes.append(f"the nodes reported are the quantized graph's ({len(quantized.graph.node)} nodes; "
                     f"{model_path.name} has {len(model.graph.node)}): qnn_preprocess_model folds constants and fuses "
                     "Erf-GELU (and ReduceL2) sequences, and quantization adds Q/DQ pairs")
    else:
        notes.append(f"{model_path.name} is already quantized (Q/DQ nodes): placed as given")
        if not _is_static(model):
            placed = tmp / "static.onnx"
            fix_shapes(model_path, placed, inputs)
            notes.append(f"shapes fixed to {inputs.describe()} first (the HTP needs static shapes)")
    nodes = placement(placed, target.qnn)  # the real placement made by the QNN EP
    accelerator = f"QNN HTP v{target.qnn.htp_arch} (ONNX Runtime QNN EP placement, HTP emulated here)"
    return SupportReport(target_name, accelerator, "ONNX Runtime CPU", nodes, notes), placed


def _node_macs(model_path: Path, inputs: ModelInputs) -> tuple[dict[str, int] | None, str, bool]:
    """MACs per node at `inputs` (None where the costs cannot be computed), how they were obtained,
    and whether they are complete (no Conv/MatMul with a tensor of unknown shape)."""
    from edgekd.analysis.graph import graph_costs, op_class

    try:
        costs = graph_costs(model_path, batch=1, inputs=inputs)
    except Exception as exc:  # noqa: BLE001 - a cost the graph does not give must not fail the check
        return None, f"MACs not available: {_first_line(exc)}", False
    how = f"MACs from the ONNX graph at inputs {inputs.describe()}"
    short = [u["node"] for u in costs.unknown if op_class(str(u["op_type"])) in ("conv", "gemm")]
    if short:
        how += f"; {len(short)} Conv/MatMul nodes have tensors of unknown shape, their MACs are undercounted ({short[0]}, ...)"
    return {c.name: c.macs for c in costs.nodes}, how, not short


def analyze(model_path: Path, target_name: str, target: Target, inputs: ModelInputs | None = None,
            calib: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """The support report of `model_path` on `target` at `inputs` (default: resolved from the model),
    with MACs per node and the MAC share off the accelerator (None with a note where the graph does
    not give them). `calib`: named calibration samples for a float model on a QNN target."""
    from edgekd.graph.resolve import load_inputs

    model_path = Path(model_path)
    inputs = inputs if inputs is not None else load_inputs(model_path)
    with temp_dir("check") as tmp:
        costed = model_path
        if target.runtime == "tensorrt":
            report = _tensorrt_support(model_path, target_name, target, inputs)
        elif target.runtime == "qnn-htp":
            report, costed = _qnn_support(model_path, target_name, target, inputs, calib, Path(tmp))
        else:
            report = _cpu_support(model_path, target_name)
        macs, how, complete = _node_macs(costed, inputs)
    data = report.to_json()
    data["inputs"] = inputs.describe()
    data["macs_how"] = how
    for node in data["nodes"]:
        node["macs"] = macs.get(node["name"], 0) if macs is not None else None
    if not complete:
        data["notes"].append(how)
    if macs is None:
        data["macs_total"] = data["macs_share_off"] = None
        return data
    total = sum(macs.values())
    data["macs_total"] = total
    data["macs_share_off"] = sum(macs.get(n.name, 0) for n in report.nodes if n.runs_on != "accelerator") / total if total else 0.0
    return data
