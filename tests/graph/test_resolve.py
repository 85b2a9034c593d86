"""edgekd/graph/resolve.py (with inputs.py): every dim of every input of real exports gets a value
and says where it came from; what cannot be resolved is a ShapeError naming the input and the dim."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import ZOO
from onnx import TensorProto, helper

from edgekd.errors import ConfigError
from edgekd.graph.feeds import make_feeds
from edgekd.graph.inputs import ShapeError, parse_shape, parse_shapes
from edgekd.graph.resolve import load_inputs

IMAGE_SIDE = {"resnet": 64, "mobilenet_v2": 64, "efficientnet": 64, "vit": 32}  # the tiny configs' image_size


@pytest.mark.parametrize("arch,exporter", ZOO)
def test_every_zoo_model_resolves_and_runs(zoo, arch: str, exporter: str) -> None:
    import onnxruntime as ort

    path = zoo(arch, exporter)
    inputs = load_inputs(path)
    for spec in inputs.inputs:
        assert len(spec.sources) == len(spec.shape) and spec.shape[0] == 1
        assert all(d > 0 for d in spec.shape) or spec.role == "past_key_values"
    if arch in IMAGE_SIDE:
        (image,) = inputs.inputs
        assert image.role == "image" and image.shape == (1, 3, IMAGE_SIDE[arch], IMAGE_SIDE[arch])
    else:
        assert inputs.shapes()["input_ids"] == (1, 128)
        assert all(s == (1, 128) for n, s in inputs.shapes().items() if not n.startswith("past"))
    outputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, make_feeds(inputs))
    assert np.isfinite(outputs[0]).all()


def test_optimum_dims_come_from_the_config_beside_the_model(zoo, tmp_path: Path) -> None:
    inputs = load_inputs(zoo("vit", "optimum"))
    assert inputs.inputs[0].sources[1:] == ("optimum-onnx export config (vit, task image-classification) from "
                                            f"{zoo('vit', 'optimum').parent / 'config.json'}",) * 3
    alone = tmp_path / "vit.onnx"  # the same graph without its config.json: the patch embedding says 32
    shutil.copy(zoo("vit", "optimum"), alone)
    (image,) = load_inputs(alone).inputs
    assert image.shape == (1, 3, 32, 32)
    assert image.sources[1] == "the first convolution's weight"
    assert image.sources[2] == "the patch embedding and the position-embedding table"
    resnet = tmp_path / "resnet.onnx"
    shutil.copy(zoo("resnet", "optimum"), resnet)
    assert load_inputs(resnet).inputs[0].shape == (1, 3, 224, 224)  # no config, no patch embedding: the default side


def test_decoder_past_defaults_to_zero_and_mask_follows_the_expression(zoo) -> None:
    path = zoo("gpt2", "optimum")
    shapes = load_inputs(path).shapes()
    assert shapes["past_key_values.0.key"] == (1, 2, 0, 16)
    assert shapes["attention_mask"] == (1, 128)  # 'past_sequence_length + sequence_length'
    decode = load_inputs(path, parse_shapes(["input_ids=1x1", "past_key_values.0.key=1x2x16x16"]))
    shapes = decode.shapes()
    assert shapes["attention_mask"] == (1, 17) and shapes["position_ids"] == (1, 1)
    assert all(shapes[f"past_key_values.{i}.{kv}"] == (1, 2, 16, 16) for i in (0, 1) for kv in ("key", "value"))
    feeds = make_feeds(decode)
    assert feeds["position_ids"].tolist() == [[16]]  # positions go on from the past


def test_text_inputs_default_to_128_tokens_and_read_the_vocabulary(zoo) -> None:
    (ids, mask) = load_inputs(zoo("distilbert", "torch")).inputs
    assert ids.role == "token_ids" and ids.vocab_size == 1000 and ids.sources[1] == "default: sequence length 128"
    assert mask.role == "attention_mask" and mask.vocab_size is None


@pytest.mark.parametrize("text,error", [
    ("input_ids", "is not NAME=DIMS"), ("input_ids=1xa", "are not integers"), ("=1x2", "is not NAME=DIMS"),
])
def test_shape_syntax_errors(text: str, error: str) -> None:
    with pytest.raises(ShapeError, match=error):
        parse_shape(text)


def test_shape_overrides_are_checked_against_the_model(zoo) -> None:
    path = zoo("gpt2", "optimum")
    with pytest.raises(ShapeError, match=r"names 'nope', which the model does not have \(its inputs: input_ids"):
        load_inputs(path, {"nope": (1, 2)})
    with pytest.raises(ShapeError, match="has rank 3, but input 'input_ids' has rank 2"):
        load_inputs(path, {"input_ids": (1, 2, 3)})
    with pytest.raises(ShapeError, match="axis 1 is 3, but the model fixes it to 2"):
        load_inputs(path, {"past_key_values.0.key": (1, 3, 4, 16)})
    with pytest.raises(ShapeError, match="different dims"):
        parse_shapes(["a=1x2", "a=1x3"])
    assert issubclass(ShapeError, ConfigError)  # exit 2 on the command line


def _mlp(path: Path) -> Path:
    """A float input whose feature dim is symbolic: nothing says how many features it has."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "mlp",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "features"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "features"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_a_dim_nothing_gives_is_an_error_naming_the_input_and_the_dim(tmp_path: Path) -> None:
    path = _mlp(tmp_path / "mlp.onnx")
    with pytest.raises(ShapeError, match=r"input 'x' \(batchxfeatures\): axis 1 \('features'\) has no value") as err:
        load_inputs(path)
    assert "--shape x=1xN" in err.value.hint
    assert load_inputs(path, {"x": (1, 20)}).shapes() == {"x": (1, 20)}


def test_static_shape_targets_take_a_decoder_at_one_decode_step(zoo) -> None:
    """The HTP runs static, non-empty shapes: an empty past cannot be its default."""
    shapes = load_inputs(zoo("gpt2", "optimum"), static=True).shapes()
    assert shapes["input_ids"] == (1, 1) and shapes["past_key_values.0.key"] == (1, 2, 127, 16)
    assert shapes["attention_mask"] == (1, 128)
    assert load_inputs(zoo("bert", "optimum"), static=True).shapes()["input_ids"] == (1, 128)  # no past: unchanged


def test_the_declared_positions_come_from_the_config_beside_the_model(zoo, tmp_path: Path) -> None:
    import json

    from edgekd.graph.hf_config import declared_positions

    path = zoo("gpt2", "optimum")
    assert declared_positions(path) == json.loads((path.parent / "config.json").read_text())["n_positions"]
    assert declared_positions(tmp_path / "model.onnx") is None  # no config.json beside it
    (tmp_path / "config.json").write_text('{"name": "another tool\'s config"}')
    assert declared_positions(tmp_path / "model.onnx") is None
