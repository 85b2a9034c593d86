"""Op support: for every node of a model, whether the target's runtime/accelerator runs it, and if
not why and where it falls back; with the share of nodes and of MACs that fall back.

- onnxruntime-cpu: the CPU execution provider is the device; ONNX Runtime's own session placement
  is read back (a node no provider can run fails the session, reported as unsupported).
- tensorrt: TensorRT's ONNX parser rules, and DLA layer rules for DLA targets (static rules from
  the TensorRT docs: nothing runs here to confirm them), with the batch pinned to 1 as the engine
  build pins it.
- qnn-htp: the real placement ONNX Runtime's QNN execution provider makes (HTP emulated on x86).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.analysis.support_types import NodeSupport, SupportReport
from edgekd.config.target import Target


def _cpu_support(model_path: Path, target_name: str) -> SupportReport:
    import onnx

    from edgekd.backends import onnxruntime as ortb

    model = onnx.load(str(model_path))
    try:
        ortb.open_session(model_path)
        nodes = [NodeSupport(n.name, n.op_type, "accelerator", "") for n in model.graph.node]
    except Exception as exc:  # ORT names the node/op it has no kernel for in the message
        first = str(exc).strip().splitlines()[0]
        nodes = [NodeSupport(n.name, n.op_type, "unsupported", f"ONNX Runtime CPU cannot load the model: {first}") for n in model.graph.node]
    return SupportReport(target_name, ortb.runtime_description(), "none (the CPU runs everything)", nodes)


def _tensorrt_support(model_path: Path, target_name: str, target: Target) -> SupportReport:
    import onnx

    from edgekd.analysis.rules_tensorrt import check_tensorrt

    trt = target.tensorrt
    dla = trt.dla_core is not None
    model = onnx.load(str(model_path))
    # edgekd's engine build pins every dynamic dimension (the batch) to 1: trtexec --shapes / one profile
    pinned = {i.name: tuple(d.dim_value if d.HasField("dim_value") else 1 for d in i.type.tensor_type.shape.dim)
              for i in model.graph.input}
    nodes = check_tensorrt(model, dla=dla, gpu_fallback=trt.gpu_fallback, trt_major=trt.trt_major, input_shapes=pinned)
    accelerator = f"DLA core {trt.dla_core} (TensorRT {trt.trt_major}.x rules)" if dla else f"GPU (TensorRT {trt.trt_major}.x ONNX parser rules)"
    fallback = "GPU (GPU fallback)" if dla and trt.gpu_fallback else "none: the build fails"
    return SupportReport(target_name, accelerator, fallback, nodes)


def _qnn_support(model_path: Path, target_name: str, target: Target) -> SupportReport:
    from edgekd.backends.qnn import placement

    nodes = placement(model_path, target.qnn)  # the real placement made by the QNN EP
    return SupportReport(target_name, f"QNN HTP v{target.qnn.htp_arch} (ONNX Runtime QNN EP placement, HTP emulated here)",
                         "ONNX Runtime CPU", nodes)


def analyze(model_path: Path, target_name: str, target: Target) -> dict[str, Any]:
    """The support report of `model_path` on `target`, with MACs per node and the MAC share off
    the accelerator (MACs from edgekd.analysis.graph at batch 1)."""
    from edgekd.analysis.graph import node_costs

    if target.runtime == "tensorrt":
        report = _tensorrt_support(model_path, target_name, target)
    elif target.runtime == "qnn-htp":
        report = _qnn_support(model_path, target_name, target)
    else:
        report = _cpu_support(model_path, target_name)
    macs = {c.name: c.macs for c in node_costs(model_path, batch=1)}
    total = sum(macs.values())
    off = sum(macs.get(n.name, 0) for n in report.nodes if n.runs_on != "accelerator")
    data = report.to_json()
    for node in data["nodes"]:
        node["macs"] = macs.get(node["name"], 0)
    data["macs_total"] = total
    data["macs_share_off"] = off / total if total else 0.0
    return data
