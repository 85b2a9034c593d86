"""Qualcomm Hexagon HTP through ONNX Runtime's QNN execution provider (the `onnxruntime-qnn` plugin).

Sessions and context binaries, and where every node really runs (the EP's own partitioning, read
back from a generated context model and its verbose log). Static shapes and HTP quantization live in
edgekd.backends.qnn.quantize, the HTP's quantization rules in edgekd.backends.qnn.rules (both
re-exported here). On x86 the HTP backend is Qualcomm's emulator: partitioning, fixed-point numerics
and context binaries are real; its wall-clock time is not a phone's latency.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.analysis.support_types import NodeSupport
from edgekd.backends.qnn.quantize import fix_shapes, quantize_for_htp
from edgekd.backends.qnn.rules import check_htp_rules
from edgekd.common.tempdirs import temp_dir
from edgekd.common.toolchain import require
from edgekd.config.qnn import QnnConfig
from edgekd.errors import EdgekdError, ToolchainMissing

if TYPE_CHECKING:
    import onnx

__all__ = ["EP_NAME", "HtpUnsupported", "check_htp_rules", "context_files", "fix_shapes", "open_session", "placement",
           "qnn_device", "quantize_for_htp"]

EP_NAME = "QNNExecutionProvider"
_PURPOSE = "the QNN HTP backend (mobile NPU targets)"
_HINT = "pip install 'edgekd[qnn]' (onnxruntime-qnn, with onnxruntime >= 1.24)"
_REGISTER_LOCK = threading.Lock()
_registered = False


class HtpUnsupported(EdgekdError):
    """The model has nodes the HTP cannot run and the target forbids running them on the CPU."""


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
        except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail/EPFail: the QNN EP cannot run this model at all
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
