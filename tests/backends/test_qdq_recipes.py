"""The Q/DQ recipe tuning axis (edgekd.backends.ort.recipes): one variant per [tune] qdq_recipes entry
that differs from [quantize]'s, quantized for real (onnxruntime.quantization) on a small conv net."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekd.backends.ort.recipes import recipe_name, recipe_variants
from edgekd.config.models import QuantizeConfig
from edgekd.config.target import QdqRecipe, TargetQuantize, TuneSpace


def _conv_net(path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
                              "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def _ctx(recipes: list[QdqRecipe]) -> SimpleNamespace:
    calib = np.random.default_rng(1).standard_normal((8, 3, 8, 8)).astype(np.float32)
    return SimpleNamespace(quant_recipe=TargetQuantize(activation_type="int8", reduce_range=False),
                           target=SimpleNamespace(tune=TuneSpace(qdq_recipes=recipes)),
                           calib_feeds=SimpleNamespace(arrays={"x": calib}), quantize_config=QuantizeConfig(),
                           model_inputs=SimpleNamespace(inputs=[SimpleNamespace(name="x", role="pixels")]))


def test_recipe_names() -> None:
    assert recipe_name(QdqRecipe(activation_type="uint8", reduce_range=True)) == "u8s8-rr"
    assert recipe_name(TargetQuantize(activation_type="int8")) == "s8s8"


def test_a_differing_recipe_becomes_a_uint8_qdq_variant(tmp_path: Path) -> None:
    source = _conv_net(tmp_path / "fp32.onnx")
    recipes = [QdqRecipe(activation_type="int8", reduce_range=False), QdqRecipe(activation_type="uint8", reduce_range=True)]
    made, notes = recipe_variants(_ctx(recipes), source, tmp_path)
    assert len(notes) == 1 and "is the target's [quantize] recipe" in notes[0]  # s8s8 is the quantize stage's graph
    (variant,) = made
    assert variant["quant_format"] == "qdq-u8s8-rr" and variant["precision"] == "int8" and variant["build_s"] > 0
    assert "reduce_range True" in variant["how"]
    model = onnx.load(str(variant["model"]))
    q_types = {numpy_helper.to_array(i).dtype for i in model.graph.initializer if i.name.endswith("zero_point")}
    assert np.dtype(np.uint8) in q_types  # activations quantized to uint8
