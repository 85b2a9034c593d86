"""Scenarios and the per-op profile on a real ONNX Runtime session of the example's student."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekd.backends.ort.session import open_session
from edgekd.config.target import SessionConfig
from edgekd.graph.resolve import load_inputs
from edgekd.perf.scenarios import offline, offline_batches, profile_ops, top_ops


def test_offline_batches_double_up_to_the_limit() -> None:
    assert offline_batches(64, None) == [1, 2, 4, 8, 16, 32, 64]
    assert offline_batches(48, None) == [1, 2, 4, 8, 16, 32, 48]
    assert offline_batches(1, None) == [1]
    assert offline_batches(64, 8) == [8]  # a static-batch graph runs its own batch only


@pytest.fixture(scope="module")
def student(cold_build) -> Path:
    return cold_build.out_dir / "student.onnx"


def test_offline_picks_the_batch_with_the_most_throughput(student: Path) -> None:
    session = open_session(student, SessionConfig(intra_op_num_threads=1))
    rows = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    result = offline(session, {"input": rows}, load_inputs(student), max_batch=16, seconds=0.05)
    batches = result["batches"]
    assert [b["batch"] for b in batches] == offline_batches(16, None)[:len(batches)]
    best = max(batches, key=lambda b: b["throughput_per_s"])
    assert result["best_batch"] == best["batch"] and result["throughput_per_s"] == best["throughput_per_s"]
    for b in batches:  # throughput is derived from the timed mean, not measured separately
        assert b["runs"] >= 5
        assert b["throughput_per_s"] == pytest.approx(b["batch"] * 1000.0 / b["mean_ms"])


def test_profile_top_ops_are_the_graphs_op_types(student: Path, tmp_path: Path) -> None:
    x = np.zeros((1, 1, 8, 8), np.float32)
    ops = profile_ops(lambda hook: open_session(student, SessionConfig(), configure=hook), {"input": x}, 20, tmp_path)
    assert ops, "the profiler recorded no kernels"
    assert sum(op["pct"] for op in ops) == pytest.approx(100.0, abs=0.01) or len(ops) == 10
    assert [op["ms"] for op in ops] == sorted((op["ms"] for op in ops), reverse=True)
    graph_ops = {n.op_type for n in onnx.load(str(student)).graph.node}
    # ORT fuses and re-lays out (e.g. Conv -> FusedConv, ReorderInput); the graph's Conv/Gemm work is there
    assert {"Conv", "Gemm"} & {op["op_type"].replace("Fused", "") for op in ops} & graph_ops
    assert list(tmp_path.iterdir()) == []  # the profile file is removed


def test_top_ops_takes_the_median_per_node(tmp_path: Path) -> None:
    """A profile in ONNX Runtime's trace format: one run interrupted by the OS must not dominate."""
    events = []
    for dur in (10, 11, 1000):  # three runs of one Conv node, one of them preempted
        events.append({"cat": "Node", "name": "conv1_kernel_time", "dur": dur, "args": {"op_name": "Conv"}})
    for dur in (5, 5, 5):
        events.append({"cat": "Node", "name": "relu_kernel_time", "dur": dur, "args": {"op_name": "Relu"}})
        events.append({"cat": "Node", "name": "relu_fence_before", "dur": 99, "args": {"op_name": "Relu"}})
    events.append({"cat": "Session", "name": "model_run", "dur": 5000})
    for dur in (17, 17, 17):  # a control-flow node: its time is its subgraph's nodes (listed above), not counted twice
        events.append({"cat": "Node", "name": "phase/If_kernel_time", "dur": dur, "args": {"op_name": "If"}})
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(events))
    assert top_ops(path) == [{"op_type": "Conv", "ms": 0.011, "pct": pytest.approx(100 * 11 / 16), "nodes": 1},
                             {"op_type": "Relu", "ms": 0.005, "pct": pytest.approx(100 * 5 / 16), "nodes": 1}]


@pytest.mark.timeout(300)
def test_worker_hands_back_a_result_larger_than_a_pipe_buffer(student: Path, tmp_path: Path) -> None:
    """The default profile's tuning returns ~8000 samples (> 64 KiB of JSON): the worker must not
    block on an unread pipe (it once did: a default build hung in the compile stage)."""
    from edgekd.perf.measure import run_worker

    request = {"mode": "tune", "rounds": 1, "runs_per_round": 12000, "warmup_runs": 0,
               "candidates": [{"model": str(student), "session": SessionConfig(intra_op_num_threads=1).model_dump()}]}
    result = run_worker(request, {"input": np.zeros((1, 1, 8, 8), np.float32)}, tmp_path, "a large result")
    assert len(result["samples_ms"][0]) == 12000 and len(json.dumps(result)) > 65536
    assert list(tmp_path.iterdir()) == []  # request, feeds and result files are removed


def test_offline_tiles_every_input_along_its_batch_axis(zoo) -> None:
    """A model with several inputs (BERT: ids, mask, token types) runs Offline at growing batches."""
    from edgekd.graph.feeds import make_feeds
    from edgekd.perf.scenarios import batch_feed

    path = zoo("bert", "optimum")
    inputs = load_inputs(path, {"input_ids": (1, 16), "attention_mask": (1, 16), "token_type_ids": (1, 16)})
    rows = make_feeds(inputs, rows=3)
    assert {n: a.shape for n, a in batch_feed(rows, inputs, 5).items()} == {n: (5, 16) for n in inputs.names()}
    result = offline(open_session(path, SessionConfig(intra_op_num_threads=1)), rows, inputs, max_batch=4, seconds=0.02)
    assert [b["batch"] for b in result["batches"]][:2] == [1, 2] and not result["static_batch"]
