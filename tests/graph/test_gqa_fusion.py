"""edgekd.graph.gqa_fusion on decoders exported the way users export them (optimum's
text-generation-with-past, random weights): a Llama's attention becomes one GroupQueryAttention per
layer whose greedy generation (prompt, then decode steps feeding the presents back) gives the
logits of the torch model; graphs of another form are refused with the reason, nothing written."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from decoders import LAYERS, VOCAB, export, generate

from edgekd.graph.gqa_fusion import NotFusable, fuse_gqa, verify


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_a_llama_generates_the_same_tokens_with_fused_attention(tmp_path: Path, kv_heads: int) -> None:
    model, path = export(tmp_path, "llama", kv_heads)
    fusion = fuse_gqa(path, tmp_path / "fused.onnx")
    import onnx

    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node)
    assert (fusion.layers, fusion.num_heads, fusion.kv_heads, fusion.head_size) == (LAYERS, 4, kv_heads, 16)
    assert ops["GroupQueryAttention"] == LAYERS and ops["Softmax"] == 0 and ops["Concat"] == 0, ops
    assert fusion.ort_fusions["RotaryEmbedding"] == 2 * LAYERS and "GroupQueryAttention" in fusion.describe()
    # per layer: packed QKV, O, gate+up packed (one MatMul and a Split), down; and the LM head
    assert fusion.packed == LAYERS and ops["Split"] == LAYERS and ops["MatMul"] == 4 * LAYERS + 1, ops
    prompt = np.random.default_rng(0).integers(0, VOCAB, (1, 7), dtype=np.int64)
    fused, exported = generate(tmp_path / "fused.onnx", prompt, 4), generate(path, prompt, 4)
    with torch.no_grad():
        tokens = torch.from_numpy(np.concatenate([prompt, *[s[:, -1:].argmax(-1) for s in exported[:-1]]], axis=1))
        reference = model(tokens).logits.numpy()
    for step, (a, b) in enumerate(zip(fused, exported)):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"step {step}")
    np.testing.assert_allclose(fused[-1][:, -1], reference[:, -1], atol=1e-4)
    assert verify(path, tmp_path / "fused.onnx", [{"input_ids": prompt, "attention_mask": np.ones_like(prompt)}]) < 1e-4


# (family, hidden size: 4 heads; Phi's half and StableLM's quarter rotary need a rotary dimension of 16)
FAMILY_SHAPES = [("qwen2", 64), ("qwen3", 64), ("granite", 64), ("phi3", 64), ("phi", 128), ("stablelm", 256), ("gpt2", 64), ("opt", 64),
                 ("gpt_neox", 256)]


@pytest.mark.parametrize(("kind", "hidden"), FAMILY_SHAPES)
def test_other_decoder_families_fuse_and_generate_the_same(tmp_path: Path, kind: str, hidden: int) -> None:
    """Q/K/V biases (Qwen2, Phi, OPT), per-head q/k norms (Qwen3), a custom scale (Granite), a packed
    QKV MatMul with a sliced rotary (Phi-3) or split (GPT-2), or packed per head (GPT-NeoX: reordered
    into one Q, K, V packing), partial rotary (Phi, StableLM, GPT-NeoX), no rotary (GPT-2, OPT: learned
    positions), queries scaled before the heads (OPT)."""
    import onnx
    from onnx import helper

    model, path = export(tmp_path, kind, hidden=hidden)
    fusion = fuse_gqa(path, tmp_path / "fused.onnx")
    nodes = onnx.load(str(tmp_path / "fused.onnx")).graph.node
    ops = Counter(n.op_type for n in nodes)
    assert fusion.layers == LAYERS and ops["GroupQueryAttention"] == LAYERS and ops["Softmax"] == 0, ops
    scales = [helper.get_attribute_value(a) for n in nodes if n.op_type == "GroupQueryAttention" for a in n.attribute if a.name == "scale"]
    rotary = [helper.get_attribute_value(a) for n in nodes if n.op_type == "GroupQueryAttention" for a in n.attribute if a.name == "do_rotary"]
    assert rotary == [int(kind not in ("gpt2", "opt"))] * LAYERS and fusion.rotary == bool(rotary[0])
    if kind in ("stablelm", "gpt2"):  # their exports compute the scale from shapes: left to the node's default (1/sqrt(head size))
        assert scales == []
    else:
        assert scales[0] == pytest.approx(0.05 if kind == "granite" else (hidden // 4) ** -0.5)  # Granite's attention_multiplier
    if kind == "qwen3":  # the norms stay, between the projections and the attention; their shape arithmetic goes
        assert ops["SimplifiedLayerNormalization"] == 2 * LAYERS + 1 and ops["Concat"] == 0, ops
    prompt = np.random.default_rng(1).integers(0, VOCAB, (1, 7), dtype=np.int64)
    fused, exported = generate(tmp_path / "fused.onnx", prompt, 4), generate(path, prompt, 4)
    for step, (a, b) in enumerate(zip(fused, exported)):
        np.testing.assert_allclose(a, b, atol=1e-4, err_msg=f"step {step}")
    with torch.no_grad():
        tokens = torch.from_numpy(np.concatenate([prompt, *[s[:, -1:].argmax(-1) for s in exported[:-1]]], axis=1))
        np.testing.assert_allclose(fused[-1][:, -1], model(tokens).logits.numpy()[:, -1], atol=1e-4)


def test_a_rotary_onnx_runtime_does_not_fuse_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    _, path = export(tmp_path, "gptj")  # its rotary reads a sin/cos table by GatherElements: no RotaryEmbedding to take
    with pytest.raises(NotFusable, match="not their projection split into heads .* a rotary embedding"):
        fuse_gqa(path, tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()


def test_a_fused_graph_that_computes_something_else_fails_verification(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    _, path = export(tmp_path, "llama")
    fuse_gqa(path, tmp_path / "fused.onnx")
    model = onnx.load(str(tmp_path / "fused.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    scale = next(a for a in node.attribute if a.name == "scale")
    assert scale.f == pytest.approx(16 ** -0.5)  # read from the export: torch's SDPA scales Q and K^T by sqrt(scale) each
    node.attribute.remove(scale)
    node.attribute.append(helper.make_attribute("scale", 1.0))  # not the model's 1/sqrt(head size)
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    prompt = np.arange(1, 8, dtype=np.int64)[None]
    with pytest.raises(NotFusable, match="differ"):
        verify(path, tmp_path / "wrong.onnx", [{"input_ids": prompt, "attention_mask": np.ones_like(prompt)}])


def test_a_rotary_dimension_gqa_cannot_run_is_refused(tmp_path: Path) -> None:
    _, path = export(tmp_path, "phi")  # head size 16, half of it rotary: a cos cache 4 wide
    with pytest.raises(NotFusable, match="cos cache .* is 4 wide"):
        fuse_gqa(path, tmp_path / "fused.onnx")


def test_a_head_size_gqa_cannot_run_is_refused(tmp_path: Path) -> None:
    _, path = export(tmp_path, "llama", hidden=32)  # 4 heads of 8
    with pytest.raises(NotFusable, match="multiple of 16"):
        fuse_gqa(path, tmp_path / "fused.onnx")


def test_a_fused_graph_onnx_runtime_cannot_run_is_not_used(tmp_path: Path) -> None:
    import onnx

    _, path = export(tmp_path, "llama")
    fuse_gqa(path, tmp_path / "fused.onnx")
    model = onnx.load(str(tmp_path / "fused.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    next(a for a in node.attribute if a.name == "kv_num_heads").i = 3  # 4 query heads do not group into 3
    onnx.save(model, str(tmp_path / "broken.onnx"))
    prompt = np.arange(1, 8, dtype=np.int64)[None]
    with pytest.raises(NotFusable, match="cannot run"):
        verify(path, tmp_path / "broken.onnx", [{"input_ids": prompt, "attention_mask": np.ones_like(prompt)}])


def test_rotary_caches_are_cut_to_the_models_positions(tmp_path: Path) -> None:
    """ONNX Runtime's optimizer writes 131072-row cos/sin caches; cut to the model's declared positions
    (its config's max_position_embeddings, 64 here) the engine generates the same, the bench reads the
    positions from the cache, and a longer sequence is refused by ONNX Runtime, not read past the table."""
    import onnx
    import onnxruntime as ort

    from edgekd.graph.decoder import complete_feeds
    from edgekd.graph.inputs import GraphHints

    _, path = export(tmp_path, "llama")
    whole = fuse_gqa(path, tmp_path / "whole.onnx")
    fusion = fuse_gqa(path, tmp_path / "fused.onnx", positions=64)
    caches = {i.name: list(i.dims) for i in onnx.load(str(tmp_path / "fused.onnx")).graph.initializer if i.name.endswith("_cache")}
    assert caches == {"cos_cache": [64, 8], "sin_cache": [64, 8]} and whole.cache_rows == 0 and fusion.cache_rows == 64
    assert "cut to the model's 64 positions" in fusion.describe() and "cut" not in whole.describe()
    assert GraphHints(onnx.load(str(tmp_path / "fused.onnx"))).max_positions() == 64
    assert GraphHints(onnx.load(str(tmp_path / "whole.onnx"))).max_positions() == 131072
    prompt = np.random.default_rng(2).integers(0, VOCAB, (1, 60), dtype=np.int64)
    for a, b in zip(generate(tmp_path / "fused.onnx", prompt, 3), generate(path, prompt, 3)):
        np.testing.assert_allclose(a, b, atol=1e-4)
    session = ort.InferenceSession(str(tmp_path / "fused.onnx"), providers=["CPUExecutionProvider"])
    long = np.ones((1, 65), np.int64)
    with pytest.raises(Exception, match="cos_cache dimension 0"):
        session.run(["logits"], complete_feeds(session, {"input_ids": long, "attention_mask": long}))


@pytest.mark.parametrize("kind, reason", [
    ("bloom", "bloom's attention adds an ALiBi position bias"),
    ("falcon", "falcon rotates its queries and keys in a form ONNX Runtime's transformers optimizer does not fuse"),
    ("gptj", "gptj rotates its queries and keys in a form"),
])
def test_what_stands_in_the_way_is_named_from_the_models_config(tmp_path: Path, kind: str, reason: str) -> None:
    """With the model's transformers config the refusal names the cause (without it, only the graph form
    that did not match: tests above)."""
    model, path = export(tmp_path, kind)
    with pytest.raises(NotFusable, match=reason):
        fuse_gqa(path, tmp_path / "fused.onnx", config=model.config)
    assert not (tmp_path / "fused.onnx").exists()
