"""edgekd/common/host.py: thread counts a user gives are bounded by this host's cores; more is exit 2
with a hint naming the core count, before any thread or worker starts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from edgekd.common.host import check_threads
from edgekd.common.toolchain import usable_cores
from edgekd.errors import ConfigError

CORES = usable_cores()


def tiny_model(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "W"], ["output"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 2])], [w])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("n", [0, 1, CORES])
def test_counts_up_to_the_cores_pass(n: int) -> None:
    assert check_threads(n, "--threads") == n


@pytest.mark.parametrize("n", [CORES + 1, 10_000, -1, True, 2.5])
def test_other_counts_are_refused_naming_the_cores(n: object) -> None:
    with pytest.raises(ConfigError) as raised:
        check_threads(n, "--threads")  # type: ignore[arg-type]
    assert raised.value.exit_code == 2 and "--threads" in str(raised.value) and str(CORES) in raised.value.one_line()


def test_a_session_with_too_many_threads_is_refused() -> None:
    pytest.importorskip("onnxruntime")
    from edgekd.backends.ort.session import session_options
    from edgekd.config.target import SessionConfig

    with pytest.raises(ConfigError, match=f"more threads than the {CORES} core"):
        session_options(SessionConfig(intra_op_num_threads=CORES + 1))
    with pytest.raises(ConfigError, match="inter_op_num_threads"):
        session_options(SessionConfig(inter_op_num_threads=CORES + 1))


def test_bench_threads_10000_exits_2_at_once(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = tiny_model(tmp_path / "m.onnx")
    code, out, err = run_cli(["bench", str(model), "--target", "x86", "--threads", "10000"], tmp_path / "cache")
    assert code == 2, (out, err)
    assert "10000" in err and f"at most {CORES}" in err and "Traceback" not in err
