"""ONNX Runtime CPU: sessions configured from a target file, batched prediction, saved engines."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from edgekd.common.host import check_threads
from edgekd.common.toolchain import require, usable_cores
from edgekd.config.target import SessionConfig

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
PROVIDER = "CPUExecutionProvider"


def resolved_threads(cfg: SessionConfig) -> int:
    """The intra-op thread count a session gets: the target's number, or (0) every usable core."""
    return cfg.intra_op_num_threads or usable_cores()


def check_session_threads(cfg: SessionConfig) -> SessionConfig:
    """`cfg` if its thread counts fit this host's cores (edgekd.common.host.check_threads): checked
    wherever a session is opened or measured here (--threads, [session], [tune] candidates)."""
    check_threads(cfg.intra_op_num_threads, "intra-op threads (--threads / [session] intra_op_num_threads)")
    check_threads(cfg.inter_op_num_threads, "[session] inter_op_num_threads")
    return cfg


def session_options(cfg: SessionConfig, optimized_model_path: Path | None = None) -> Any:
    ort = require("onnxruntime", "running ONNX models")
    check_session_threads(cfg)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[cfg.graph_optimization_level])
    opts.intra_op_num_threads = resolved_threads(cfg)
    opts.inter_op_num_threads = cfg.inter_op_num_threads
    opts.execution_mode = ort.ExecutionMode.ORT_PARALLEL if cfg.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only; warnings that matter are recorded in the report
    if optimized_model_path is not None:
        opts.optimized_model_filepath = str(optimized_model_path)
    return opts


def open_session(model: Path, cfg: SessionConfig | None = None, optimized_model_path: Path | None = None,
                 configure: Callable[[Any], None] | None = None) -> Any:
    """An InferenceSession on the CPU provider. `cfg=None` gives ORT's defaults with basic
    optimizations (used to evaluate intermediate artefacts as they are). `configure` may change the
    SessionOptions before the session opens (e.g. to turn on profiling)."""
    ort = require("onnxruntime", "running ONNX models")
    cfg = cfg or SessionConfig(graph_optimization_level="basic")
    opts = session_options(cfg, optimized_model_path)
    if configure is not None:
        configure(opts)
    return ort.InferenceSession(str(model), opts, providers=[PROVIDER])


def predict(session: Any, feeds: Mapping[str, np.ndarray] | np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The first output for every sample of `feeds` (named inputs, samples on axis 0; an array is the
    first input's), run in batches (a graph with a static batch gets that many rows at a time); a
    decoder's past key/values the feeds lack are fed empty (the full-sequence forward)."""
    first = session.get_inputs()[0]
    if isinstance(feeds, np.ndarray):
        feeds = {first.name: feeds}
    if isinstance(first.shape[0], int):  # a static batch (e.g. HTP-ready graphs): feed that many rows
        batch_size = first.shape[0]
    from edgekd.graph.decoder import complete_feeds

    count = len(next(iter(feeds.values())))
    outs = [session.run(None, complete_feeds(session, {n: a[i:i + batch_size] for n, a in feeds.items()}))[0]
            for i in range(0, count, batch_size)]
    return np.concatenate(outs)


def predict_file(model: Path, feeds: Mapping[str, np.ndarray], cfg: SessionConfig | None = None) -> np.ndarray:
    """`predict` with a session opened on `model` as `open_session` opens it."""
    return predict(open_session(Path(model), cfg), feeds)


def runtime_description(cfg: SessionConfig | None = None) -> str:
    ort = require("onnxruntime", "running ONNX models")
    text = f"onnxruntime {ort.__version__} {PROVIDER}"
    if cfg is not None:
        text += f", {resolved_threads(cfg)} intra-op threads, graph optimization '{cfg.graph_optimization_level}'"
    return text
