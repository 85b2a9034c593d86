"""edgekd/graph/model_file.py: an ONNX model whose external data points outside its own folder
(absolute path, `..`, a symlink out) is refused, in every command that reads a user's ONNX file."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from helpers import run_cli  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgekd.errors import ConfigError  # noqa: E402
from edgekd.graph.model_file import check_external_data, check_model_file  # noqa: E402


def model_with_external_data(folder: Path, location: str) -> Path:
    """y = x @ W, W (4x3 float32) stored as external data at `location` (relative to `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    path = folder / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the model's folder that a hostile model would read."""
    path = tmp_path / "secret.bin"
    path.write_bytes(np.arange(12, dtype=np.float32).tobytes())
    return path


def hostile(tmp_path: Path, secret: Path, how: str) -> tuple[Path, str]:
    folder = tmp_path / "model"
    if how == "absolute":
        return model_with_external_data(folder, str(secret)), str(secret)
    if how == "dotdot":
        return model_with_external_data(folder, "../secret.bin"), "../secret.bin"
    if how == "dotdot-inside":
        return model_with_external_data(folder, "sub/../../secret.bin"), "sub/../../secret.bin"
    folder.mkdir()
    os.symlink(secret, folder / "weights.bin")  # a name inside the folder, a file outside it
    return model_with_external_data(folder, "weights.bin"), "weights.bin"


HOW = ["absolute", "dotdot", "dotdot-inside", "symlink"]


def test_data_inside_the_folder_is_accepted(tmp_path: Path) -> None:
    model = model_with_external_data(tmp_path / "m", "sub/weights.bin")
    (tmp_path / "m" / "sub").mkdir()
    (tmp_path / "m" / "sub" / "weights.bin").write_bytes(np.zeros(12, dtype=np.float32).tobytes())
    assert check_external_data(model) == ["sub/weights.bin"]
    assert check_model_file(model) == model


@pytest.mark.parametrize("how", HOW)
def test_data_outside_the_folder_is_refused(tmp_path: Path, secret: Path, how: str) -> None:
    model, location = hostile(tmp_path, secret, how)
    with pytest.raises(ConfigError) as raised:
        check_model_file(model)
    line = raised.value.one_line()
    assert str(model) in line and repr(location) in line and "outside the model's folder" in line
    assert "\n" not in line


@pytest.mark.parametrize("how", HOW)
def test_onnx_teacher_refuses_it(tmp_path: Path, secret: Path, how: str) -> None:
    from edgekd.distill.teachers import OnnxTeacher

    model, location = hostile(tmp_path, secret, how)
    with pytest.raises(ConfigError, match="outside the model's folder"):
        OnnxTeacher(model)


@pytest.mark.parametrize("command", [["estimate", "--target", "x86"], ["check", "--target", "x86"]])
def test_commands_exit_2_naming_model_and_location(tmp_path: Path, secret: Path, command: list[str]) -> None:
    model, location = hostile(tmp_path, secret, "dotdot")
    code, out, err = run_cli([command[0], str(model), *command[1:]], tmp_path / "cache")
    assert code == 2, (out, err)
    assert str(model) in err and location in err and "Traceback" not in err
