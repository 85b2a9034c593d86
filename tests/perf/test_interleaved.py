"""edgekd.perf.interleaved / runtime_group: the tuner's timing worker keeps each runtime's candidates in
a process of its own (OpenVINO beside ONNX Runtime's thread pools ran 2x slower in one process) while
the rounds stay interleaved; a child that cannot open a candidate is an error with its reason."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.config.target import SessionConfig
from edgekd.perf.interleaved import measure_candidates
from edgekd.perf.runtime_group import ChildGroup

ORT = SessionConfig(intra_op_num_threads=1).model_dump()
OPENVINO = {"inference_num_threads": 1, "inference_precision_hint": "f32", "performance_hint": "LATENCY", "num_streams": 1}


def _model(tmp: Path) -> tuple[Path, Path]:
    """A MatMul + Relu graph (x: 1x16) and its feeds file."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])], [weight])
    path = tmp / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feeds = tmp / "feeds.npz"
    np.savez(feeds, x=np.ones((3, 16), np.float32))
    return path, feeds


def test_each_runtime_is_timed_in_its_own_process_in_interleaved_rounds(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model, feeds = _model(tmp_path)
    candidates = [{"model": str(model), "session": ORT}, {"model": str(model), "runtime": "openvino", "session": OPENVINO},
                  {"model": str(model), "session": {**ORT, "graph_optimization_level": "extended"}}]
    rounds = []
    result = measure_candidates({"feeds": str(feeds), "candidates": candidates, "rounds": 3, "runs_per_round": 4, "warmup_runs": 1},
                                rounds.append)
    assert result["processes"] == 2  # ONNX Runtime here, OpenVINO in a child
    assert [len(s) for s in result["samples_ms"]] == [12, 12, 12] and all(t > 0 for s in result["samples_ms"] for t in s)
    assert rounds == ["tuning round 1/3", "tuning round 2/3", "tuning round 3/3"]


def test_one_runtime_stays_in_the_worker_process(tmp_path: Path) -> None:
    model, feeds = _model(tmp_path)
    result = measure_candidates({"feeds": str(feeds), "candidates": [{"model": str(model), "session": ORT}], "rounds": 2,
                                 "runs_per_round": 3, "warmup_runs": 0}, lambda _: None)
    assert result["processes"] == 1 and len(result["samples_ms"][0]) == 6


def test_a_second_feed_is_timed_on_the_same_open_runners_in_both_processes(tmp_path: Path, monkeypatch) -> None:
    """A decoder's prompt pass after its decode step: one worker run, each runner opened once (counted
    here by wrapping open_runner; the OpenVINO child opens its own, once), a feed the runners take as
    the first (a wrong input name would fail in the runtime)."""
    pytest.importorskip("openvino")
    from edgekd.perf import runtime_group

    model, feeds = _model(tmp_path)
    np.savez(tmp_path / "second.npz", x=np.full((2, 16), 2.0, np.float32))
    opened = []
    real = runtime_group.open_runner
    monkeypatch.setattr(runtime_group, "open_runner", lambda *a: opened.append(a[1]) or real(*a))
    candidates = [{"model": str(model), "session": ORT}, {"model": str(model), "runtime": "openvino", "session": OPENVINO}]
    labels: list[str] = []
    result = measure_candidates({"feeds": str(feeds), "candidates": candidates, "rounds": 2, "runs_per_round": 3, "warmup_runs": 1,
                                 "then": [{"feeds": str(tmp_path / "second.npz"), "rounds": 3, "runs_per_round": 2, "warmup_runs": 1}]},
                                labels.append)
    assert [len(s) for s in result["samples_ms"]] == [6, 6] and [len(s) for s in result["then_samples_ms"][0]] == [6, 6]
    assert opened == [model]  # the ONNX Runtime candidate, once, in this process
    assert labels[-3:] == ["tuning round (feed 2) 1/3", "tuning round (feed 2) 2/3", "tuning round (feed 2) 3/3"]


def test_a_child_group_runs_in_another_process_and_ends_on_close(tmp_path: Path) -> None:
    model, feeds = _model(tmp_path)
    group = ChildGroup([{"model": str(model), "session": ORT}], str(feeds), 1)
    try:
        assert group.proc.pid != os.getpid() and len(group.time(0, 5)) == 5
    finally:
        group.close()
    assert group.proc.returncode == 0


def test_a_candidate_the_child_cannot_open_is_an_error_with_its_reason(tmp_path: Path) -> None:
    _, feeds = _model(tmp_path)
    with pytest.raises(RuntimeError, match="timing child process: .*missing.onnx"):
        ChildGroup([{"model": str(tmp_path / "missing.onnx"), "session": ORT}], str(feeds), 1)
