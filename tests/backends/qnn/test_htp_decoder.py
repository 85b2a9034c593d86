"""A KV-cache decoder's prefill graph for the QNN HTP (tiny random HF Llama): exported with present
key/values out and no past in (optimum use_past_in_inputs=False), quantized for HTP at a static prompt
length, compiled to a context binary by the HTP backend (emulated here), run on HTP numerics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.qnn

VOCAB, PROMPT = 64, 8


@pytest.fixture(scope="module")
def prefill(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("onnxruntime_qnn")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgekd.backends.qnn.htp import quantize_for_htp
    from edgekd.config.qnn import QnnConfig
    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    task, folder = CausalLM(vocab_size=VOCAB, max_length=PROMPT), tmp_path_factory.mktemp("prefill")
    fp32, qdq = folder / "model.onnx", folder / "model_htp.onnx"
    export_hf(model, task, fp32, 17, with_past=True, past_inputs=False)
    ids = np.random.default_rng(0).integers(0, VOCAB, (8, PROMPT))
    cfg = QnnConfig(htp_arch="75", soc_model="57")
    quantize_for_htp(fp32, qdq, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, cfg, "minmax", task.model_inputs(batch=1))
    return fp32, qdq, cfg


def test_the_prefill_graph_gives_logits_and_the_cache_without_past_inputs(prefill) -> None:
    import onnx

    _, qdq, _ = prefill
    graph = onnx.load(str(qdq)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    outputs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert outputs["logits"] == [1, PROMPT, VOCAB]
    assert {n: s for n, s in outputs.items() if n != "logits"} == {
        f"present.{layer}.{kind}": [1, 2, PROMPT, 8] for layer in (0, 1) for kind in ("key", "value")}


def test_the_prefill_compiles_to_a_context_binary_and_runs_on_htp_numerics(prefill, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from edgekd.backends.qnn.htp import context_files, open_session

    fp32, qdq, cfg = prefill
    context = tmp_path / "prefill_ctx.onnx"
    session = open_session(qdq, cfg, context_out=context)
    files = context_files(context)
    assert len(files) == 2 and all(f.stat().st_size > 0 for f in files)
    assert any(n.op_type == "EPContext" for n in onnx.load(str(context)).graph.node)
    ids = np.random.default_rng(1).integers(0, VOCAB, (1, PROMPT))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    htp = session.run(None, feed)
    ref = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, feed)
    assert all(np.isfinite(h).all() and h.shape == r.shape for h, r in zip(htp, ref))
    scale = max(np.abs(r).max() for r in ref)
    assert max(np.abs(h - r).max() for h, r in zip(htp, ref)) < 0.5 * scale  # uint8/uint16 HTP numerics, not fp32


def test_the_static_decode_graph_compiles_and_agrees_with_fp32_on_htp(tmp_path: Path) -> None:
    """The decode graph: 1 token after a fixed past of CONTEXT - 1 slots (the prompt's key/values first,
    zeros masked off after), explicit position_ids; calibrated on such steps, compiled, run on HTP."""
    pytest.importorskip("onnxruntime_qnn")
    import onnxruntime as ort
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from edgekd.backends.qnn.htp import context_files, open_session, quantize_for_htp
    from edgekd.config.qnn import QnnConfig
    from edgekd.graph.decoder import static_decode_calibration
    from edgekd.graph.resolve import load_inputs
    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    context = PROMPT + 4
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    fp32 = tmp_path / "decode.onnx"
    export_hf(model, CausalLM(vocab_size=VOCAB, max_length=PROMPT), fp32, 17, with_past=True, positions=True)
    ids = np.random.default_rng(0).integers(0, VOCAB, (8, PROMPT))
    calib = static_decode_calibration(fp32, {"input_ids": ids, "attention_mask": np.ones_like(ids)}, context)
    assert calib["input_ids"].shape == (8, 1) and calib["position_ids"].tolist() == [[PROMPT - 1]] * 8
    assert calib["attention_mask"][0].tolist() == [1] * (PROMPT - 1) + [0] * (context - PROMPT) + [1]
    assert calib["past_key_values.0.key"].shape == (8, 2, context - 1, 8) and not calib["past_key_values.0.key"][:, :, PROMPT - 1:].any()
    shapes = {n: (1, *a.shape[1:]) for n, a in calib.items()}
    cfg = QnnConfig(htp_arch="75", soc_model="57")
    qdq = tmp_path / "decode_htp.onnx"
    quantize_for_htp(fp32, qdq, calib, cfg, "minmax", load_inputs(fp32, shapes, static=True))
    session = open_session(qdq, cfg, context_out=tmp_path / "decode_ctx.onnx")
    assert len(context_files(tmp_path / "decode_ctx.onnx")) == 2
    reference = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    agree = [np.argmax(session.run(None, {n: a[r:r + 1] for n, a in calib.items()})[0][0, -1])
             == np.argmax(reference.run(None, {n: a[r:r + 1] for n, a in calib.items()})[0][0, -1]) for r in range(8)]
    assert np.mean(agree) >= 0.5  # uint8/uint16 HTP numerics on a random tiny model: most steps agree
