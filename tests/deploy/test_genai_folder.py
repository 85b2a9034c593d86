"""edgekd.deploy.genai_folder: onnxruntime-genai runs a decoder graph from the genai_config.json edgekd
writes, and its logits are the graph's own (tests/decoders.generate: edgekd's presents fed back), with the
key/value buffers shared where the attention is GroupQueryAttention and copied where it is not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from decoders import export, generate

from edgekd.deploy.genai_folder import NotGenai, genai_layout, write_genai_config

og = pytest.importorskip("onnxruntime_genai")
ROLES = {"token_ids": "input_ids", "attention_mask": "attention_mask"}
PROMPT = np.array([[3, 17, 42, 99, 5, 120, 7]], np.int64)


def _genai_logits(folder: Path, steps: int) -> list[np.ndarray]:
    """genai's last-position logits after the prompt, then after each greedy token (fed as edgekd's loop feeds it)."""
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=PROMPT.shape[1] + steps + 1)
    generator = og.Generator(model, params)
    generator.append_tokens(PROMPT.astype(np.int32))
    logits = [generator.get_output("logits")[:, -1]]
    for _ in range(steps):
        generator.append_tokens(logits[-1].argmax(-1).astype(np.int32)[None])
        logits.append(generator.get_output("logits")[:, -1])
    return logits


def _check(model: Path, roles: dict[str, str], shared: bool, heads: int | None = None) -> dict:
    layout = genai_layout(model, roles, 64, heads)
    assert layout.shared is shared
    write_genai_config(model.parent, layout)
    for got, want in zip(_genai_logits(model.parent, 5), generate(model, PROMPT, 5)):
        np.testing.assert_allclose(got, want[:, -1], rtol=1e-4, atol=1e-4)
    return json.loads((model.parent / "genai_config.json").read_text())


def test_a_fused_llama_runs_in_genai_with_shared_buffers(tmp_path: Path) -> None:
    from edgekd.graph.gqa_fusion import fuse_gqa

    _, source = export(tmp_path, "llama")
    fused = source.parent / "fused.onnx"
    fuse_gqa(source, fused, 64)
    config = _check(fused, ROLES, shared=True)
    decoder = config["model"]["decoder"]
    assert (decoder["num_attention_heads"], decoder["num_key_value_heads"], decoder["head_size"], decoder["num_hidden_layers"]) == (4, 2, 16, 2)
    assert decoder["inputs"]["past_key_names"] == "past_key_values.%d.key" and decoder["outputs"]["present_value_names"] == "present.%d.value"
    assert config["model"]["type"] == "decoder" and config["model"]["vocab_size"] == 128 and decoder["filename"] == "fused.onnx"


def test_a_prompt_decode_split_engine_shares_its_buffers_in_both_branches(tmp_path: Path) -> None:
    """edgekd.graph.phase_split: the prompt pass (INT8) and each decode step (INT4) run in If branches; both
    attentions are GroupQueryAttention reading the outer graph's past, so genai shares the buffers."""
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.gqa_fusion import fuse_gqa
    from edgekd.graph.phase_split import split_by_phase
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    _, source = export(tmp_path, "llama")
    fused, int8, int4, split = (source.parent / f"{n}.onnx" for n in ("fused", "int8", "int4", "split"))
    fuse_gqa(source, fused, 64)
    quantize_dynamic_int8(fused, int8, TargetQuantize(), op_types=("MatMul", "Gemm"))
    quantize_weight_only(fused, int4, WeightOnly(4, 32, True, 4))
    split_by_phase(int8, int4, split, "input_ids")
    _check(split, ROLES, shared=True)


def test_an_unfused_gpt2_runs_with_copied_buffers(tmp_path: Path) -> None:
    _, source = export(tmp_path, "gpt2")  # its export's inputs: input_ids, attention_mask and the past (no positions)
    config = _check(source, {**ROLES, "position_ids": "position_ids"}, shared=False, heads=4)  # the model config's heads
    assert set(config["model"]["decoder"]["inputs"]) == {"input_ids", "attention_mask", "past_key_names", "past_value_names"}
    assert config["search"]["past_present_share_buffer"] is False


def test_what_genai_cannot_run_is_said(tmp_path: Path) -> None:
    _, source = export(tmp_path, "llama")
    from edgekd.graph.gqa_fusion import fuse_gqa

    fuse_gqa(source, tmp_path / "fused.onnx", 48)  # undeclared positions: the rows of the graph's rotary cache
    assert genai_layout(tmp_path / "fused.onnx", ROLES, None).config["model"]["context_length"] == 48
    with pytest.raises(NotGenai, match="context length is unknown"):  # the unfused Llama's rotary is computed: no table
        genai_layout(source, ROLES, None)
    with pytest.raises(NotGenai, match="token_ids"):
        genai_layout(source, {"attention_mask": "attention_mask"}, 64)
    with pytest.raises(NotGenai, match="query heads are unknown"):  # an unfused attention's are in the model config only
        genai_layout(source, ROLES, 64)


def test_the_bench_measurement_says_why_genai_could_not_run(tmp_path: Path) -> None:
    """edgekd.perf.genai_decode: a folder genai refuses gives "not available" with genai's reason, not a failed bench."""
    from edgekd.perf.genai_decode import genai_decode, genai_folder

    _, source = export(tmp_path, "llama")
    layout = genai_layout(source, ROLES, 64, 4)
    broken = {**layout.config, "model": {**layout.config["model"], "vocab_size": 0}}
    write_genai_config(source.parent, type(layout)(broken, layout.shared))
    assert genai_folder(source) == source.parent and genai_folder(source.parent / "other.onnx") is None
    result = genai_decode(source.parent, PROMPT, 4, 1, [])
    assert result["method"] == "not available" and "vocab_size" in result["how"], result


def test_the_bench_measurement_stops_at_the_models_last_position(tmp_path: Path) -> None:
    """genai keeps the last step's pick in its sequence: a generation to the model's last position times one step
    fewer, says so, and its tokens are the loop's."""
    from edgekd.perf.genai_decode import genai_decode

    _, source = export(tmp_path, "llama")
    write_genai_config(source.parent, genai_layout(source, ROLES, 64, 4))
    steps = 64 - PROMPT.shape[1]  # the loop's most: its last step feeds position 63
    loop = [int(step[0, -1].argmax()) for step in generate(source, PROMPT, steps)[1:]]
    result = genai_decode(source.parent, PROMPT, steps, 1, loop)
    assert result["method"] == "measured" and result["new_tokens"] == steps - 1 and result["same_tokens_as_loop"], result
    assert f"its first {steps - 1} of {steps}" in result["how"] and result["shared_buffers"] is False
