"""edgekd/graph/transformer.py (recognising and fusing transformer graphs, attention-mask variants) and
edgekd.graph.quantize.quantize_dynamic_int8, on the real optimum-exported tiny BERT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import padded_masks, softmax_outputs
from onnx import TensorProto, helper

pytest.importorskip("onnxruntime")


def _cnn_with_softmax() -> onnx.ModelProto:
    """Conv -> ReduceMean -> MatMul -> Softmax: a normalization-like op and a Softmax, but no
    attention (the Softmax's output feeds no MatMul)."""
    rng = np.random.default_rng(0)
    weights = [helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], rng.standard_normal(36).tolist()),
               helper.make_tensor("fc", TensorProto.FLOAT, [4, 3], rng.standard_normal(12).tolist()),
               helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("ReduceMean", ["c", "axes"], ["p"], keepdims=0),
             helper.make_node("MatMul", ["p", "fc"], ["l"]), helper.make_node("Softmax", ["l"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_bert_export_is_a_transformer_and_a_cnn_is_not(zoo) -> None:
    from edgekd.graph.transformer import has_attention, is_decoder_step, is_transformer

    bert = onnx.load(str(zoo("bert")))
    assert is_transformer(bert) and has_attention(bert) and not is_decoder_step(bert)
    cnn = _cnn_with_softmax()
    assert not has_attention(cnn) and not is_transformer(cnn)
    # the file name says nothing: the same graph under another name is still a transformer
    assert is_transformer(onnx.load_from_string(bert.SerializeToString()))


def test_fusion_applies_attention_skip_layernorm_bias_gelu_embed_layernorm(zoo, tmp_path) -> None:
    from edgekd.graph.transformer import (
        attention_heads,
        fuse_transformer,
        is_transformer,
    )

    source = zoo("bert")
    applied = fuse_transformer(source, tmp_path / "fused.onnx")
    fused = onnx.load(str(tmp_path / "fused.onnx"))
    counts = {op: sum(n.op_type == op for n in fused.graph.node) for op in applied}
    assert counts == applied  # the statistics describe the written graph
    assert {"Attention", "SkipLayerNormalization", "BiasGelu", "EmbedLayerNormalization"} <= set(applied)
    given = onnx.load(str(source))
    layers = sum(n.op_type == "Softmax" for n in given.graph.node)
    assert applied["Attention"] == layers and not any(n.op_type == "Softmax" for n in fused.graph.node)
    assert set(attention_heads(fused)) == {2}  # the tiny config's num_attention_heads, read from the graph
    assert [(i.name, i.type.tensor_type.elem_type) for i in fused.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in given.graph.input]
    assert any(o.domain == "com.microsoft" for o in fused.opset_import) and is_transformer(fused)


def test_fused_graph_matches_the_export_for_every_mask(zoo, tmp_path) -> None:
    """Raw 2-D masks in the fused Attention: left-padded and gapped masks give the export's numbers."""
    from edgekd.backends.ort.session import predict_file
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.resolve import load_inputs
    from edgekd.graph.transformer import fuse_transformer, mask_variants

    source = zoo("bert")
    fuse_transformer(source, tmp_path / "fused.onnx")
    inputs = load_inputs(source)
    arrays = make_feeds(inputs, rows=6)
    variants = mask_variants(arrays, inputs)
    assert set(variants) == {"left padding", "gaps"}
    for feeds in (arrays, *variants.values()):
        reference, got = predict_file(source, feeds), predict_file(tmp_path / "fused.onnx", feeds)
        assert np.abs(got - reference).max() <= 1e-5 * max(1.0, np.abs(reference).max())
    left = variants["left padding"]["attention_mask"]
    assert (left[:, 0] == 0).all() and (left[:, -1] == 1).all() and left.dtype == arrays["attention_mask"].dtype
    # the masks change the export's output: a check on masks of ones alone would not see a mask handled wrongly
    assert np.abs(predict_file(source, variants["gaps"]) - predict_file(source, arrays)).max() > 0


def test_dynamic_quantization_of_the_fused_graph(zoo, tmp_path) -> None:
    from edgekd.backends.ort.session import predict_file
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.resolve import load_inputs
    from edgekd.graph.transformer import fuse_transformer

    source = zoo("bert")
    fuse_transformer(source, tmp_path / "fused.onnx")
    quantize_dynamic_int8(tmp_path / "fused.onnx", tmp_path / "dynamic.onnx", TargetQuantize(reduce_range=True))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node}
    assert {"QAttention", "DynamicQuantizeLinear", "MatMulInteger"} <= ops and "Attention" not in ops
    feeds = make_feeds(load_inputs(source), rows=4)
    reference, got = predict_file(source, feeds), predict_file(tmp_path / "dynamic.onnx", feeds)
    assert got.shape == reference.shape and np.isfinite(got).all()
    assert np.abs(got - reference).max() < np.abs(reference).max()  # close to fp32, not equal
    assert Path(tmp_path / "dynamic.onnx").stat().st_size < Path(source).stat().st_size


def test_mask_path_is_found_from_the_mask_input(zoo) -> None:
    from edgekd.graph.transformer import mask_path, name_nodes

    model = onnx.load(str(zoo("bert")))
    name_nodes(model)
    path = mask_path(model, ["attention_mask"])
    nodes, masked = path.nodes, path.masked
    ops = {n.name: n.op_type for n in model.graph.node}
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert {n.name for n in softmaxes} <= set(nodes) and len(masked) == len(softmaxes)
    assert not any(ops[n] in ("MatMul", "Gemm", "LayerNormalization") for n in nodes)
    assert all(ops[next(n.name for n in model.graph.node if scores in n.output)] == "Add" for scores, _ in masked)
    assert sorted(path.probabilities) == sorted(n.output[0] for n in softmaxes)
    assert mask_path(model, []).nodes == []


@pytest.mark.parametrize("calibration", ["masks of ones", "padded masks"])
def test_static_int8_keeps_padding_masked(zoo, tmp_path, calibration) -> None:
    """TensorRT's recipe (symmetric INT8): calibrated on masks of ones (generated feeds) or on padded
    masks, the quantized graph gives padded positions no attention and its attention rows still sum
    to 1 (the Softmax outputs on [0, 1]: a range calibrated on 128 attended tokens would clip the
    larger probabilities of a padded input)."""
    from edgekd.config.models import QuantizeConfig
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.feeds import make_feeds
    from edgekd.graph.quantize import quantize_int8
    from edgekd.graph.resolve import load_inputs

    source = zoo("bert")
    inputs = load_inputs(source)
    calib = make_feeds(inputs, rows=16, seed=4)
    calib = padded_masks(calib) if calibration == "padded masks" else calib
    recipe = TargetQuantize(symmetric_activations=True, quantize_bias=False)
    kept = quantize_int8(source, tmp_path / "int8.onnx", calib, QuantizeConfig(), recipe, mask_inputs=("attention_mask",))
    model = onnx.load(str(tmp_path / "int8.onnx"))
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    assert softmaxes and {n.name for n in softmaxes} <= set(kept)
    producers = {o: n for n in model.graph.node for o in n.output}
    assert all(producers[n.input[0]].op_type == "Add" for n in softmaxes)  # masked scores in float, not through a Q/DQ pair
    feeds = padded_masks(make_feeds(inputs, rows=4, seed=5))
    probs = softmax_outputs(tmp_path / "int8.onnx", feeds)
    padding = feeds["attention_mask"] == 0  # [batch, key]
    assert probs[:, padding.nonzero()[0], :, :, padding.nonzero()[1]].max() < 1e-6
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=0.05)


def test_the_tuners_dynamic_int8_of_a_vit_keeps_its_patch_conv_in_fp32(zoo, tmp_path) -> None:
    """dynamic_op_types: ORT's integer ops less Conv (ConvInteger ran ViT-Tiny's patch embedding slower
    than fp32 Conv); every MatMul weight is still int8."""
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.quantize import dynamic_op_types, quantize_dynamic_int8

    assert "Conv" not in dynamic_op_types() and "MatMul" in dynamic_op_types()
    source = zoo("vit")
    quantize_dynamic_int8(source, tmp_path / "dynamic.onnx", TargetQuantize(reduce_range=True), dynamic_op_types())
    ops = [n.op_type for n in onnx.load(str(tmp_path / "dynamic.onnx")).graph.node]
    assert "Conv" in ops and "ConvInteger" not in ops
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
