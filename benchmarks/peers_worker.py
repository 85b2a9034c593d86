"""One row of benchmarks/peers.py in its own process: opens the model (torch module or ONNX Runtime
session) as the row's spec says, measures its accuracy on the test split, then answers commands on
stdin, one JSON object a line, with one JSON line on stdout each:

    first line, unasked                              -> {"ready", "accuracy", "threads", "graph_ops", "probe_ms"}
    {"cmd": "round", "bench": {...BenchConfig...}}  -> {"samples_ms": [...]}   (edgekd.perf.measure.sample)
    {"cmd": "profile", "runs": N, "dir": "..."}     -> {"top_ops": [...]}      (ORT rows; OpenVINO rows of peers_real)
    {"cmd": "quit"}

Every row runs in a process of its own so that thread pools (torch's OpenMP, ONNX Runtime's) never
share a process; the coordinator interleaves the rows' rounds.

    python benchmarks/peers_worker.py SPEC.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.config.models import BenchConfig
from edgekd.perf.measure import sample

PROBE_RUNS = 20
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def os_threads() -> int:
    """Threads of this process right now (/proc/self/task): what a runtime really started."""
    return len(os.listdir("/proc/self/task"))


class TorchRow:
    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        from edgekd.common.factories import call
        from edgekd.distill.weights import load_weights

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        torch.manual_seed(0)
        self.module = load_weights(call(spec["factory"], spec["args"], "peers.factory", spec["source"]), Path(spec["weights"]), spec["role"])
        self.torch = torch
        self.threads = {"torch.get_num_threads": torch.get_num_threads()}
        self.graph_ops: dict[str, int] | None = None

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return np.concatenate([self.module(self.torch.from_numpy(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])

    def runner(self, x1: np.ndarray) -> Callable[[], object]:
        tensor = self.torch.from_numpy(x1)
        module, mode = self.module, self.torch.inference_mode

        def run_once() -> object:
            with mode():
                return module(tensor)
        return run_once


class OrtRow:
    """`spec["session"]`: {"edgekd": SessionConfig fields} opens it as edgekd's backend does
    (edgekd.backends.ort.session.open_session); {"ort_default": {overrides}} starts from a plain
    onnxruntime.SessionOptions() and sets only the overrides (intra_op_num_threads, graph_optimization_level)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import onnxruntime  # noqa: F401  (imported before counting: the import itself starts threads)

        import edgekd.backends.ort.session  # noqa: F401

        self.spec, self.model = spec, Path(spec["model"])
        before = os_threads()
        self.session = self.open()
        # ORT's intra-op pool: n-1 worker threads plus the calling thread
        self.threads = {"intra_op_num_threads_set": self._intra_op(), "compute_threads": os_threads() - before + 1}
        self.graph_ops = self._optimized_ops()

    def _intra_op(self) -> int:
        session = self.spec["session"]
        if "edgekd" in session:
            from edgekd.backends.ort.session import resolved_threads
            from edgekd.config.target import SessionConfig

            return resolved_threads(SessionConfig.model_validate(session["edgekd"]))
        return int(session["ort_default"].get("intra_op_num_threads", 0))

    def open(self, hook: Callable[[Any], None] | None = None) -> Any:
        """`spec["session"]["config"]` adds session config entries (add_session_config_entry) in either mode."""
        import onnxruntime as ort

        session = self.spec["session"]

        def configure(opts: Any) -> None:
            for key, value in session.get("config", {}).items():
                opts.add_session_config_entry(key, value)
            if hook is not None:
                hook(opts)

        if "edgekd" in session:
            from edgekd.backends.ort.session import open_session
            from edgekd.config.target import SessionConfig

            return open_session(self.model, SessionConfig.model_validate(session["edgekd"]), configure=configure)
        opts = ort.SessionOptions()
        overrides = session["ort_default"]
        if "intra_op_num_threads" in overrides:
            opts.intra_op_num_threads = int(overrides["intra_op_num_threads"])
        if "graph_optimization_level" in overrides:
            opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[overrides["graph_optimization_level"]])
        configure(opts)
        return ort.InferenceSession(str(self.model), opts, providers=["CPUExecutionProvider"])

    def _optimized_ops(self) -> dict[str, int]:
        """Node op types of the graph as this session's optimizer leaves it (saved by a second,
        identical session: ORT's optimized_model_filepath), i.e. which kernels really run."""
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optimized.onnx"
            self.open(lambda opts: setattr(opts, "optimized_model_filepath", str(path)))
            return dict(Counter(node.op_type for node in onnx.load(str(path)).graph.node))

    def logits(self, x: np.ndarray) -> np.ndarray:
        from edgekd.backends.ort.session import predict

        return predict(self.session, x)

    def runner(self, x1: np.ndarray) -> Callable[[], object]:
        run, feed = self.session.run, {self.session.get_inputs()[0].name: x1}
        return lambda: run(None, feed)

    def profile(self, x1: np.ndarray, runs: int, workdir: Path) -> list[dict[str, Any]]:
        from edgekd.perf.scenarios import profile_ops

        return profile_ops(self.open, {self.session.get_inputs()[0].name: x1}, runs, workdir)


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text())
    out = os.fdopen(os.dup(1), "w")  # replies only; anything a library prints goes to stderr
    os.dup2(2, 1)
    if spec["kind"] in ("torch", "ort"):
        x, y = np.load(spec["x_test"]), np.load(spec["y_test"])
        row = TorchRow(spec) if spec["kind"] == "torch" else OrtRow(spec)
        accuracy = float((row.logits(x).argmax(axis=1) == y).mean() * 100.0) if spec.get("accuracy", True) else None
        run_once = row.runner(x[:1])
        profile = (lambda runs, d: row.profile(x[:1], runs, d) if isinstance(row, OrtRow) else None)
    else:  # benchmarks/peers_real.py's kinds: a named-input feed, no labels (random-weight models)
        from peers_real_rows import open_row

        row = open_row(spec)
        accuracy, run_once, profile = None, row.runner(), row.profile
    probe = []
    for _ in range(PROBE_RUNS):  # a first idea of the run time, for the coordinator to size the rounds
        start = time.perf_counter_ns()
        run_once()
        probe.append((time.perf_counter_ns() - start) / 1e6)
    out.write(json.dumps({"ready": True, "accuracy": accuracy, "threads": row.threads, "graph_ops": row.graph_ops,
                          "probe_ms": float(np.median(probe))}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "round":
            reply: dict[str, Any] = {"samples_ms": sample(run_once, BenchConfig.model_validate(cmd["bench"]))}
        elif cmd["cmd"] == "profile":
            reply = {"top_ops": profile(int(cmd["runs"]), Path(cmd["dir"]))}
        else:
            break
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
