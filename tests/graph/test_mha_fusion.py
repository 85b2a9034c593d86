"""edgekd.graph.mha_fusion on encoders exported the way users export them (transformers models from
tiny configs, random weights, optimum-onnx and torch.onnx): a ViT's self-attention becomes one
MultiHeadAttention per layer whose logits are the torch model's; masked attention (BERT) and graphs
without attention are refused with the reason, nothing written."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekd.graph.graph_edit import NotFusable, verify
from edgekd.graph.mha_fusion import fuse_mha


def _torch_logits(pixels: np.ndarray) -> np.ndarray:
    from edgekd.examples import zoo

    model = zoo.build("vit", "tiny")
    with torch.inference_mode():
        return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


@pytest.mark.parametrize("exporter", ["optimum", "torch"])
def test_a_vit_runs_its_attention_as_multi_head_attention_with_the_torch_models_logits(zoo, tmp_path: Path, exporter: str) -> None:
    from edgekd.backends.ort.session import open_session

    path = zoo("vit", exporter)
    fusion = fuse_mha(path, tmp_path / "fused.onnx")
    nodes = onnx.load(str(tmp_path / "fused.onnx")).graph.node
    ops = Counter(n.op_type for n in nodes)
    assert (fusion.layers, fusion.num_heads) == (2, 2)  # the tiny ViT: 2 layers, 2 heads of 16
    assert fusion.scale == pytest.approx(16 ** -0.5, rel=1e-6)
    assert ops["MultiHeadAttention"] == 2 and ops["Softmax"] == 0
    # the heads' split and merge are gone (the patch embedding's Transpose stays)
    assert not [n.name for n in nodes if n.op_type in ("Transpose", "Reshape") and "attention" in n.name]
    pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = open_session(tmp_path / "fused.onnx")
    logits = session.run(None, {session.get_inputs()[0].name: pixels})[0]
    np.testing.assert_allclose(logits, _torch_logits(pixels), atol=1e-4)
    assert verify(path, tmp_path / "fused.onnx", [{"pixel_values": pixels}]) < 1e-4
    assert "2 heads" in fusion.describe() and "MultiHeadAttention" in fusion.describe()


def test_masked_attention_is_refused_and_nothing_is_written(zoo, tmp_path: Path) -> None:
    with pytest.raises(NotFusable, match="masked scores"):
        fuse_mha(zoo("bert"), tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()


def test_a_cnn_has_no_attention_to_fuse(zoo, tmp_path: Path) -> None:
    with pytest.raises(NotFusable, match="no Softmax"):
        fuse_mha(zoo("resnet"), tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()


def test_a_head_split_whose_shape_is_computed_is_refused(zoo, tmp_path: Path) -> None:
    """The heads come from the Reshape's constant [.., .., heads, head size]: a computed one is not read."""
    model = onnx.load(str(zoo("vit")))
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and "attention/attention" in n.name]
    shape = reshapes[0].input[1]
    model.graph.node.insert(list(model.graph.node).index(reshapes[0]),
                            onnx.helper.make_node("Identity", [shape], ["computed_shape"], name="computed"))
    reshapes[0].input[1] = "computed_shape"
    onnx.save(model, str(tmp_path / "computed.onnx"))
    with pytest.raises(NotFusable, match="no constant"):
        fuse_mha(tmp_path / "computed.onnx", tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()
