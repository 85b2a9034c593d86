"""edgekd.graph.decoder, edgekd.graph.weight_only and the with-past export (edgekd.tasks.export) on tiny
random Hugging Face Llama and GPT-2 decoders: the KV-cache graph's full-sequence forward (empty past)
and a decode step match torch; MatMulNBits int4/int8 graphs run and their perplexity is computed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.backends.ort.session import open_session, predict
from edgekd.graph.decoder import (
    complete_feeds,
    empty_past,
    graph_past_inputs,
    has_kv_cache,
    past_inputs,
    with_past,
)
from edgekd.graph.weight_only import WeightOnly, quantize_weight_only
from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

VOCAB, LENGTH, OPSET = 120, 12, 17


def tiny(kind: str) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=32)).eval()


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model, path = tiny(request.param), tmp_path_factory.mktemp(request.param) / "model.onnx"
    export_hf(model, CausalLM(vocab_size=VOCAB, max_length=LENGTH), path, OPSET, with_past=True)
    return model, path


def batch() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(1).integers(0, VOCAB, (3, LENGTH))
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def torch_logits(model: torch.nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, use_cache=False).logits.numpy()


def test_the_graph_takes_past_and_gives_present(exported) -> None:
    _, path = exported
    session = open_session(path)
    pasts = past_inputs(session.get_inputs())
    outputs = [o.name for o in session.get_outputs()]
    assert has_kv_cache(path) and len(pasts) == 4 and [p.name for p in pasts] == [p.name for p in graph_past_inputs(path)]
    assert outputs == ["logits", *(p.name.replace("past_key_values", "present") for p in pasts)]
    assert all(empty.shape[2] == 0 and empty.shape[0] == 2 for empty in empty_past(pasts, 2).values())


def test_empty_past_is_the_full_sequence_forward(exported) -> None:
    model, path = exported
    feeds = batch()
    assert np.abs(predict(open_session(path), feeds) - torch_logits(model, feeds)).max() < 1e-4


def test_a_decode_step_with_the_cache_matches_the_full_sequence(exported) -> None:
    model, path = exported
    session, feeds = open_session(path), batch()
    reference = torch_logits(model, feeds)[:, -1]
    prompt = {k: v[:, :-1] for k, v in feeds.items()}
    outputs = session.run(None, complete_feeds(session, prompt))
    names = [p.name for p in past_inputs(session.get_inputs())]
    step = session.run(None, {"input_ids": feeds["input_ids"][:, -1:], "attention_mask": feeds["attention_mask"],
                              **dict(zip(names, outputs[1:]))})
    assert step[0].shape == (3, 1, VOCAB) and np.abs(step[0][:, 0] - reference).max() < 1e-4


def test_the_build_inputs_gain_the_past_at_length_zero(exported) -> None:
    _, path = exported
    task_inputs = CausalLM(vocab_size=VOCAB, max_length=LENGTH).model_inputs(batch=1)
    extended = with_past(task_inputs, path)
    past = [i for i in extended.inputs if i.role == "past_key_values"]
    assert extended.names()[:2] == ["input_ids", "attention_mask"] and len(past) == 4
    assert all(i.shape[0] == 1 and i.shape[2] == 0 and i.batch_axis == 0 for i in past)


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_only_graphs_run_and_their_perplexity_is_computed(exported, tmp_path: Path, bits: int) -> None:
    from edgekd.graph.feeds import FeedSet
    from edgekd.pipeline.evaluation import quality_metric

    _, path = exported
    out = tmp_path / f"int{bits}.onnx"
    nodes = quantize_weight_only(path, out, WeightOnly(bits=bits, block_size=32))
    assert nodes >= 2 * 4 and out.stat().st_size < path.stat().st_size  # every projection (and the head)
    task, feeds = CausalLM(vocab_size=VOCAB, max_length=LENGTH), batch()
    fp32, quantized = predict(open_session(path), feeds), predict(open_session(out), feeds)
    assert 0 < np.abs(quantized - fp32).max() < (0.5 if bits == 4 else 0.05)
    feedset = FeedSet(feeds, None, "3 random rows")
    ppl = [quality_metric(task.metric, feedset, o, "here", task) for o in (fp32, quantized)]
    assert all(m.method == "measured" and 1.0 < m.value for m in ppl)
    assert abs(ppl[1].value - ppl[0].value) / ppl[0].value < (0.05 if bits == 4 else 0.005)


def test_the_embedding_table_quantized_too_keeps_the_logits_and_shrinks_the_file(exported, tmp_path: Path) -> None:
    """embedding: the token Gather becomes GatherBlockQuantized (4-bit blocks along the hidden axis);
    the fp32 table is gone, the logits stay as close to fp32's as INT4's, the file is valid ONNX (IR 10
    for its INT4 tensors, the graph's own opset kept). GPT-2's head reads the same table (tied, not
    untied here): refused, as quantizing would store the table twice."""
    import onnx

    from edgekd.graph.weight_only import NoEmbedding, token_embedding

    _, path = exported
    plain, table = tmp_path / "int4.onnx", tmp_path / "int4_emb.onnx"
    quantize_weight_only(path, plain, WeightOnly(4, 32, True, 4))
    if "gpt2" in str(path):
        with pytest.raises(NoEmbedding, match="also read by .* tied head"):
            quantize_weight_only(path, table, WeightOnly(4, 32, True, 4, embedding=True))
        return
    assert quantize_weight_only(path, table, WeightOnly(4, 32, True, 4, embedding=True)) > 0
    model = onnx.load(str(table))
    onnx.checker.check_model(model)
    assert "GatherBlockQuantized" in [n.op_type for n in model.graph.node] and token_embedding(model) is None and model.ir_version >= 10
    assert [o.version for o in model.opset_import if o.domain == ""] == [o.version for o in onnx.load(str(path)).opset_import if o.domain == ""]
    feeds = batch()
    fp32, q, qe = (predict(open_session(m), feeds) for m in (path, plain, table))
    assert 0 < np.abs(qe - q).max() and np.abs(qe - fp32).max() < 1.5 * np.abs(q - fp32).max() + 0.05
    assert table.stat().st_size < plain.stat().st_size


def test_a_bad_weight_only_setting_is_refused(tmp_path: Path) -> None:
    from edgekd.graph.weight_only import NoEmbedding

    with pytest.raises(ValueError, match="bits"):
        WeightOnly(bits=3)
    with pytest.raises(ValueError, match="power of two"):
        WeightOnly(block_size=48)
    with pytest.raises(ValueError, match="4 bits only"):
        WeightOnly(bits=8, embedding=True)
    from onnx import TensorProto, helper, numpy_helper, save

    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")  # a MatMul, no token ids: no table
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "mlp.onnx"))
    with pytest.raises(NoEmbedding, match="no token embedding table"):
        quantize_weight_only(tmp_path / "mlp.onnx", tmp_path / "q.onnx", WeightOnly(embedding=True))
    assert not (tmp_path / "q.onnx").exists()


def test_static_qdq_calibrated_on_decode_steps_keeps_the_cache_in_range(exported, tmp_path: Path) -> None:
    """A random tiny model's int8 logits are coarse either way; what the cache calibration must give is a
    decode step no worse than the same graph's full-sequence forward (the cached keys/values in range)."""
    from edgekd.config.models import QuantizeConfig
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.decoder import split_calibration
    from edgekd.graph.quantize import quantize_int8

    _, path = exported
    ids = np.random.default_rng(2).integers(0, VOCAB, (16, LENGTH))
    calib = split_calibration(path, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert calib["input_ids"].shape == (16, LENGTH // 2) and calib["attention_mask"].shape == (16, LENGTH)
    assert all(calib[p.name].shape[2] == LENGTH // 2 for p in graph_past_inputs(path))
    assert split_calibration(path, calib) == calib  # feeds that carry a past already (decode steps) are used as they are
    out = tmp_path / "qdq.onnx"
    quantize_int8(path, out, calib, QuantizeConfig(), TargetQuantize(symmetric_activations=True, per_channel=True))
    fp32, qdq = open_session(path), open_session(out)
    feeds = batch()
    prompt = {k: v[:, :-1] for k, v in feeds.items()}
    names = [p.name for p in past_inputs(fp32.get_inputs())]
    steps, full = [], []
    for session in (fp32, qdq):
        cache = session.run(None, complete_feeds(session, prompt))[1:]
        steps.append(session.run(None, {"input_ids": feeds["input_ids"][:, -1:], "attention_mask": feeds["attention_mask"],
                                        **dict(zip(names, cache))})[0][:, 0])
        full.append(predict(session, feeds))
    step_error, full_error = np.abs(steps[1] - steps[0]).max(), np.abs(full[1] - full[0]).max()
    assert np.isfinite(steps[1]).all() and 0 < step_error <= 1.25 * full_error


def test_a_past_with_an_unknown_head_dim_is_a_config_error(tmp_path: Path) -> None:
    """onnxruntime-genai's builder names the head dim 'kv_cache_dim': no empty past can be made for it."""
    import onnx
    from onnx import TensorProto, helper

    from edgekd.errors import ConfigError

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    past = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["batch", 2, "past", "kv_cache_dim"])
    out = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, ["batch", 2, "past", "kv_cache_dim"])
    logits = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", "sequence"])
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"]),
                               helper.make_node("Identity", ["past_key_values.0.key"], ["present.0.key"])],
                              "g", [ids, past], [logits, out])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ConfigError, match="axis 3 \\(kv_cache_dim\\) is neither the batch nor the past length"):
        predict(open_session(path), {"input_ids": np.zeros((1, 3), np.int64)})
