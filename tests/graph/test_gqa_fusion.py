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

from edgekd.graph.gqa_fusion import NotFusable, fuse_gqa, verify
from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

VOCAB, LAYERS = 128, 2


def export(tmp: Path, kind: str, kv_heads: int = 2, hidden: int = 64) -> tuple[torch.nn.Module, Path]:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=128, num_hidden_layers=LAYERS,
                                             num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64))
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=LAYERS, n_head=4, n_positions=64))
    path = tmp / kind / "model.onnx"
    export_hf(model.eval(), CausalLM(vocab_size=VOCAB, max_length=16), path, 17, with_past=True)
    return model, path


def generate(model: Path, prompt: np.ndarray, steps: int) -> list[np.ndarray]:
    """Greedy generation with the graph's own cache: the logits of the prompt, then of each step."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds

    session = open_session(model)
    names = [o.name for o in session.get_outputs()]
    feed = complete_feeds(session, {"input_ids": prompt, "attention_mask": np.ones_like(prompt)})
    logits = []
    for _ in range(steps + 1):
        out = dict(zip(names, session.run(None, feed)))
        logits.append(out["logits"])
        length = feed["attention_mask"].shape[1] + 1
        feed = {"input_ids": out["logits"][:, -1:].argmax(-1), "attention_mask": np.ones((1, length), np.int64),
                **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}
    return logits


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


def test_a_graph_without_rotary_attention_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    _, path = export(tmp_path, "gpt2")
    with pytest.raises(NotFusable, match="rotary"):
        fuse_gqa(path, tmp_path / "fused.onnx")
    assert not (tmp_path / "fused.onnx").exists()


def test_a_fused_graph_that_computes_something_else_fails_verification(tmp_path: Path) -> None:
    import onnx
    from onnx import helper

    _, path = export(tmp_path, "llama")
    fuse_gqa(path, tmp_path / "fused.onnx")
    model = onnx.load(str(tmp_path / "fused.onnx"))
    node = next(n for n in model.graph.node if n.op_type == "GroupQueryAttention")
    node.attribute.append(helper.make_attribute("scale", 1.0))  # not the model's 1/sqrt(head size)
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    prompt = np.arange(1, 8, dtype=np.int64)[None]
    with pytest.raises(NotFusable, match="differ"):
        verify(path, tmp_path / "wrong.onnx", [{"input_ids": prompt, "attention_mask": np.ones_like(prompt)}])


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
