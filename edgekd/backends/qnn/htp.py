"""Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider (the `onnxruntime-qnn` plugin).

Static shapes, HTP quantization (uint8/uint16 QDQ), sessions and context binaries, where every node
really runs (the EP's own partitioning, read back from a generated context model and its verbose
log), and the HTP's quantization rules. On x86 the HTP backend is Qualcomm's emulator: partitioning,
fixed-point numerics and context binaries are real; its wall-clock time is not a phone's latency.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.analysis.support_types import NodeSupport
from edgekd.common.fsutil import atomic_write_bytes
from edgekd.common.tempdirs import temp_dir
from edgekd.common.toolchain import require
from edgekd.config.qnn import QnnConfig
from edgekd.errors import ConfigError, DataError, EdgekdError, ToolchainMissing
from edgekd.graph.inputs import ModelInputs

if TYPE_CHECKING:
    import onnx

    from edgekd.graph.quantize import Calibration

EP_NAME = "QNNExecutionProvider"
_PURPOSE = "the QNN HTP backend (mobile NPU targets)"
_HINT = "pip install 'edgekd[qnn]' (onnxruntime-qnn, with onnxruntime >= 1.24)"
_REGISTER_LOCK = threading.Lock()
_registered = False


class HtpUnsupported(EdgekdError):
    """The model has nodes the HTP cannot run and the target forbids running them on the CPU."""


# ---------------------------------------------------------------- static shapes and quantization


def fix_shapes(model_in: Path, model_out: Path, inputs: ModelInputs) -> None:
    """Every input at its resolved shape and every output static (the HTP needs static shapes)."""
    onnx = require("onnx", "fixing ONNX shapes")
    from edgekd.graph.shapes import static_model

    model = static_model(onnx.load(str(model_in)), inputs)
    problems = _shape_problems(model)
    empty = [v.name for v in model.graph.input if any(d.HasField("dim_value") and d.dim_value == 0
                                                      for d in v.type.tensor_type.shape.dim)]
    if empty:
        raise ConfigError(f"{model_in}: input(s) {', '.join(empty)} are empty at inputs {inputs.describe()} (a 0 dim, "
                          "such as an empty KV cache); the HTP runs no empty tensors",
                          "give those inputs a non-empty shape with --shape (a decoder's past length > 0, e.g. "
                          "--shape past_key_values.0.key=BxHEADSx16xHEAD_DIM for 16 cached tokens, for every past input)")
    if problems:
        raise ConfigError(f"{model_in}: still dynamic at inputs {inputs.describe()}: {'; '.join(problems)}",
                          "give every input a fixed shape (--shape) or export with static shapes (HTP graphs need them)")
    atomic_write_bytes(model_out, model.SerializeToString())


def quantize_for_htp(fp32_model: Path, out_model: Path, calib: Calibration, cfg: QnnConfig, calibrate_method: str,
                     inputs: ModelInputs) -> None:
    """Shapes fixed to `inputs` (batch 1), `qnn_preprocess_model` (shape inference, ORT's basic
    optimizations and QNN-friendly fusions such as Erf-GELU to Gelu), then `get_qnn_qdq_config` +
    `quantize`: a QDQ model with uint8 weights, uint8 or uint16 activations and static shapes,
    calibrated one sample per batch on every row of `calib` (named inputs)."""
    onnx = require("onnx", "HTP quantization")
    require("onnxruntime", "HTP quantization")
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    from edgekd.graph.quantize import (
        CALIBRATE_METHODS,
        calibration_reader,
        quiet_quantizer_logs,
    )
    from edgekd.graph.quantize import calibrate_method as method

    if calibrate_method not in CALIBRATE_METHODS:
        raise ConfigError(f"calibrate_method '{calibrate_method}' is not one of {', '.join(CALIBRATE_METHODS)}")
    if not calib or len(next(iter(calib.values()))) == 0:
        raise DataError("HTP quantization got no calibration samples", "give the project a non-empty calibration split")
    types = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}
    out_model.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_model.parent, prefix=".htp-quant-") as tmp:
        fixed, prepared, quantized = Path(tmp, "fixed.onnx"), Path(tmp, "prepared.onnx"), Path(tmp, "qdq.onnx")
        fix_shapes(fp32_model, fixed, inputs)
        model = onnx.load(str(fixed))
        # onnxruntime 1.32's qnn_preprocess_model fails on any metadata_props (dict.update on protobuf entries)
        del model.metadata_props[:]
        # qnn_preprocess_model writes its (ORT-optimized) model only when it changed something; naming the
        # (already fixed) input shapes counts as a change, so constant folding and Identity removal always apply
        shapes = [(name, ",".join(map(str, shape))) for name, shape in inputs.shapes().items()]
        with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():  # calibrators print progress
            source = prepared if qnn_preprocess_model(model, str(prepared), dynamic_input_shapes=shapes) else fixed
            qdq_config = get_qnn_qdq_config(
                str(source), calibration_reader(calib, float_inputs_as="float32"), calibrate_method=method(calibrate_method),
                activation_type=types[cfg.activation_type], weight_type=types[cfg.weight_type],
                per_channel=cfg.per_channel,
            )
            quantize(str(source), str(quantized), qdq_config)
        os.replace(quantized, out_model)


# ---------------------------------------------------------------- sessions and context binaries


def qnn_device() -> Any:
    """The QNN EP's device, registering the plugin library only if no one in this process has yet
    (ORT raises "EP library is already registered" on a second registration under the same name)."""
    global _registered
    ort = require("onnxruntime", _PURPOSE)
    qnn = require("onnxruntime_qnn", _PURPOSE)
    if not hasattr(ort, "register_execution_provider_library") or not hasattr(ort, "get_ep_devices"):
        raise ToolchainMissing(f"onnxruntime {ort.__version__} cannot load plugin execution providers", _HINT)
    with _REGISTER_LOCK:
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
        if not devices and not _registered:
            try:
                ort.register_execution_provider_library(EP_NAME, qnn.get_library_path())
            except Exception as exc:  # ORT raises its own Fail type; all mean "cannot load the plugin"
                raise ToolchainMissing(f"onnxruntime could not load the QNN EP library {qnn.get_library_path()}: {exc}",
                                       _HINT) from exc
            _registered = True
            devices = [d for d in ort.get_ep_devices() if d.ep_name == EP_NAME]
    if not devices:
        raise ToolchainMissing("the QNN execution provider is registered but offers no device", _HINT)
    return devices[0]


def _create_session(model: Path, cfg: QnnConfig, *, context_file: Path | None, allow_fallback: bool,
                    log_verbose: bool, optimize: bool = True) -> Any:
    ort = require("onnxruntime", _PURPOSE)
    qnn = require("onnxruntime_qnn", _PURPOSE)
    device = qnn_device()
    opts = ort.SessionOptions()
    opts.log_severity_level = 0 if log_verbose else 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not allow_fallback:
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if context_file is not None:
        opts.add_session_config_entry("ep.context_enable", "1")
        opts.add_session_config_entry("ep.context_file_path", str(context_file))
        opts.add_session_config_entry("ep.context_embed_mode", "0")
    opts.add_provider_for_devices([device], {"backend_path": qnn.get_qnn_htp_path(), **cfg.provider_options()})
    try:
        return ort.InferenceSession(str(model), opts)
    except Exception as exc:  # onnxruntime's Fail / InvalidGraph / ...: inspect the message
        if "fallback to CPU EP has been explicitly disabled" in str(exc):
            raise HtpUnsupported(f"{model}: some nodes cannot run on the {cfg.describe()} and CPU fallback is disabled",
                                 "see edgekd.backends.qnn.htp.placement(model, cfg) for which nodes and why, "
                                 "or set [qnn] allow_cpu_fallback = true") from exc
        raise


def open_session(model: Path, cfg: QnnConfig, context_out: Path | None = None,
                 disable_cpu_fallback: bool = False, log_verbose: bool = False) -> Any:
    """An InferenceSession on the QNN HTP (CPU fallback unless `disable_cpu_fallback` or the target
    forbids it). With `context_out` (e.g. `student_ctx.onnx`) it also writes the context model and its
    `<stem>_qnn.bin` beside it (embed mode 0): the artefact a phone loads without re-preparing the graph."""
    allow = cfg.allow_cpu_fallback and not disable_cpu_fallback
    if context_out is None:
        return _create_session(model, cfg, context_file=None, allow_fallback=allow, log_verbose=log_verbose)
    context_out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=context_out.parent, prefix=".qnn-ctx-") as tmp:
        staged = Path(tmp, context_out.name)
        session = _create_session(model, cfg, context_file=staged, allow_fallback=allow, log_verbose=log_verbose)
        if not staged.exists():
            raise HtpUnsupported(f"{model}: no node runs on the {cfg.describe()}, so there is no context binary to write",
                                 "see edgekd.backends.qnn.htp.placement(model, cfg)")
        for produced in sorted(Path(tmp).iterdir(), key=lambda p: p == staged):  # the .onnx last
            os.replace(produced, context_out.parent / produced.name)
    return session


def context_files(context_model: Path) -> list[Path]:
    """The context model and the binaries its EPContext nodes name (embed mode 0). A graph the EP
    splits into several partitions (nodes left on the CPU between them) shares one binary: only the
    main context node (main_context = 1) names it."""
    onnx = require("onnx", "reading QNN context models")
    model = onnx.load(str(context_model), load_external_data=False)
    names = [_attribute(node, "ep_cache_context") for node in model.graph.node
             if node.op_type == "EPContext" and _attribute(node, "embed_mode") == 0]
    return [context_model, *(context_model.parent / n.decode() for n in dict.fromkeys(names) if n)]


def _attribute(node: onnx.NodeProto, name: str) -> Any:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)


# ---------------------------------------------------------------- placement


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (where ONNX Runtime's C++ logger writes) to `path` for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


def _failure_reasons(log: str) -> dict[str, str]:
    """Node name -> the QNN EP's reason, from its verbose `Validation FAILED for N nodes in
    OrtNodeUnit (Op) :` blocks (one `Operator type: .. Node name: .. Node index: ..` line per node,
    then `REASON : ..`). The first pass (original node names) wins."""
    reasons: dict[str, str] = {}
    pending: list[str] | None = None
    for line in log.splitlines():
        text = line.strip()
        if "Validation FAILED for" in line:
            pending = []
        elif pending is not None and text.startswith("Operator type:") and " Node name: " in text:
            pending.append(text.split(" Node name: ", 1)[1].rsplit(" Node index:", 1)[0])
        elif pending is not None and text.startswith("REASON :"):
            for name in pending:
                reasons.setdefault(name, text[len("REASON :"):].strip())
            pending = None
        else:
            pending = None
    return reasons


def placement(model: Path, cfg: QnnConfig) -> list[NodeSupport]:
    """Where ORT's QNN EP really puts every node of `model` (graph order): a session with a verbose
    log generates a context model; nodes folded into its EPContext nodes run on the HTP
    ("accelerator"), nodes left in it run on the CPU ("fallback", with the EP's logged reason).
    When the target disallows CPU fallback those nodes are "unsupported" (the session would fail).

    ORT's own graph rewrites are off here so that every node keeps its name (the QNN EP partitions
    before most of them run; on edgekd's QDQ models the split is the same with them on). Unnamed or
    duplicate names become `<op_type>_<index>`. Only top-level nodes are reported. The process's
    stderr (fd 2) goes to a temp file while the session is built."""
    onnx = require("onnx", "QNN placement")
    proto = onnx.load(str(model))
    seen: set[str] = set()
    renamed = False
    for index, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name, renamed = f"{node.op_type}_{index}", True
        seen.add(node.name)
    # with fallback disabled the EP also takes the graph-I/O Q/DQ it would otherwise leave to the CPU
    probe_cfg = cfg if cfg.allow_cpu_fallback else cfg.model_copy(update={"offload_graph_io_quantization": False})
    with temp_dir("qnn-placement") as tmp:
        source = model
        if renamed:
            source = Path(tmp, "named.onnx")
            onnx.save(proto, str(source))
        context, log_file = Path(tmp, "placement_ctx.onnx"), Path(tmp, "ort.log")
        try:
            with _stderr_to(log_file):
                _create_session(source, probe_cfg, context_file=context, allow_fallback=True, log_verbose=True,
                                optimize=False)
        except EdgekdError:  # onnxruntime-qnn missing or unusable: not a verdict on the model
            raise
        except Exception as exc:  # onnxruntime's Fail/EPFail: the QNN EP cannot run this model at all
            return _no_session(proto, exc, _failure_reasons(log_file.read_text(encoding="utf-8", errors="replace")))
        log = log_file.read_text(encoding="utf-8", errors="replace")
        if context.exists():
            left = onnx.load(str(context), load_external_data=False)
            on_cpu = {n.name for n in left.graph.node if n.op_type != "EPContext"}
        elif "All nodes placed on [CPUExecutionProvider]" in log:
            on_cpu = {n.name for n in proto.graph.node}
        else:
            raise RuntimeError(f"QNN EP wrote no context model for {model} and its log does not say that every node "
                               "is on the CPU")
    reasons = _failure_reasons(log)
    off = "fallback" if cfg.allow_cpu_fallback else "unsupported"
    result = []
    for node in proto.graph.node:
        if node.name not in on_cpu:
            result.append(NodeSupport(node.name, node.op_type, "accelerator", ""))
            continue
        reason = _reason_for(node.name, reasons) or "accepted by the QNN EP, but ONNX Runtime placed it on the CPU"
        if not cfg.allow_cpu_fallback:
            reason += " (CPU fallback is disabled for this target: a session would fail)"
        result.append(NodeSupport(node.name, node.op_type, off, reason))
    return result


def _reason_for(name: str, reasons: dict[str, str]) -> str:
    """The EP's reason for node `name`; its log may name the node as ORT's layout transformer
    renamed it (`<name>_token_<n>`)."""
    if name in reasons:
        return reasons[name]
    return next((why for logged, why in reasons.items() if re.fullmatch(re.escape(name) + r"_token_\d+", logged)), "")


def _no_session(proto: onnx.ModelProto, exc: Exception, reasons: dict[str, str]) -> list[NodeSupport]:
    """Every node "unsupported" when ONNX Runtime cannot build a session with the QNN EP at all (the
    model cannot be deployed this way), with the EP's own reason where it rejected the node."""
    text = str(exc).strip().strip('"')
    failure = f"ONNX Runtime could not build a QNN EP session for this model: {text.splitlines()[0] if text else exc!r}"
    result = []
    for node in proto.graph.node:
        own = _reason_for(node.name, reasons)
        reason = f"the QNN EP rejected it ({own}), then {failure}" if own else failure
        result.append(NodeSupport(node.name, node.op_type, "unsupported", reason))
    return result


# ---------------------------------------------------------------- HTP quantization rules

_ACTIVATION_TYPES = ("uint8", "uint16")
_MATMUL_PAIRS = {("uint8", "uint8"), ("uint8", "uint16"), ("uint16", "uint8")}
_BIAS_SLOTS = {("Conv", 2), ("ConvTranspose", 2), ("Gemm", 2), ("LayerNormalization", 2)}  # ORT quantizes these as int32 biases


def _shape_problems(model: onnx.ModelProto) -> list[str]:
    initializers = {i.name for i in model.graph.initializer}
    problems = []
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in (v for v in values if v.name not in initializers):
            if not value.type.tensor_type.HasField("shape"):
                problems.append(f"graph {kind} '{value.name}' has no shape")
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value == 0:
                    problems.append(f"graph {kind} '{value.name}' axis {axis} is 0 (an empty tensor, such as an empty "
                                    "KV cache); the HTP runs no empty tensors")
                elif not (dim.HasField("dim_value") and dim.dim_value > 0):
                    label = dim.dim_param or "unknown"
                    problems.append(f"graph {kind} '{value.name}' axis {axis} is dynamic ('{label}'); the HTP needs static shapes")
    return problems


def check_htp_rules(model: onnx.ModelProto) -> list[str]:
    """Violations of the HTP's rules (empty: none): every activation Q/DQ uint8 or uint16, every
    weight uint8 (int32 only as a Conv/Gemm bias), quantized MatMul input pairs u8/u8, u8/u16 or
    u16/u8, static graph input/output shapes, no Loop or If."""
    from onnx import helper

    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = _attribute(node, "value")
            if value is not None:
                constants[node.output[0]] = value
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node.op_type, slot))

    def dtype_name(tensor: Any) -> str:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)))

    def qdq_type(node: onnx.NodeProto) -> str:
        if len(node.input) > 2 and node.input[2]:
            zero_point = constants.get(node.input[2])
            return dtype_name(zero_point) if zero_point is not None else "unknown"
        if node.op_type == "QuantizeLinear":
            output_dtype = _attribute(node, "output_dtype")
            return str(np.dtype(helper.tensor_dtype_to_np_dtype(output_dtype))) if output_dtype else "uint8"
        if node.input[0] in constants:
            return dtype_name(constants[node.input[0]])
        source = producers.get(node.input[0])
        return qdq_type(source) if source is not None and source.op_type == "QuantizeLinear" else "unknown"

    problems = [f"{n.op_type} '{n.name}': control flow ({n.op_type}) cannot run on the HTP"
                for n in graph.node if n.op_type in ("Loop", "If")]
    problems += _shape_problems(model)
    for node in (n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")):
        found = qdq_type(node)
        if node.op_type == "DequantizeLinear" and node.input[0] in constants:
            uses = consumers.get(node.output[0], [])
            if found == "int32" and uses and all(use in _BIAS_SLOTS for use in uses):
                continue  # a bias: int32, scale = input scale x weight scale
            if found != "uint8":
                problems.append(f"{node.op_type} '{node.name}': weight type {found}, the HTP needs uint8")
        elif found not in _ACTIVATION_TYPES:
            problems.append(f"{node.op_type} '{node.name}': activation type {found}, the HTP needs uint8 or uint16")
    for node in (n for n in graph.node if n.op_type == "MatMul"):
        sources = [producers.get(name) for name in node.input[:2]]
        if all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            pair = tuple(qdq_type(s) for s in sources)
            if pair not in _MATMUL_PAIRS:
                problems.append(f"MatMul '{node.name}': input types {pair[0]}/{pair[1]}, the HTP runs u8/u8, u8/u16, u16/u8")
    return problems
