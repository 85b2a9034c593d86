"""edgekd.graph.phase_split on a Llama exported the way users export it (optimum's text-generation-
with-past, random weights): the prompt pass of the split graph gives the prompt part's outputs, each
decode step the decode part's, through a whole greedy generation; weights both parts hold are stored
once; graphs that do not pair are refused with the reason."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from decoders import export, generate

from edgekd.graph.phase_split import NotSplittable, split_by_phase
from edgekd.graph.quantize import quantize_dynamic_int8
from edgekd.graph.weight_only import WeightOnly, quantize_weight_only


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> tuple[Path, Path, Path]:
    from edgekd.config.target import TargetQuantize

    tmp = tmp_path_factory.mktemp("split")
    _, fp32 = export(tmp, "llama")
    int8, int4 = tmp / "int8.onnx", tmp / "int4.onnx"
    quantize_dynamic_int8(fp32, int8, TargetQuantize(), op_types=("MatMul", "Gemm"))
    assert quantize_weight_only(fp32, int4, WeightOnly(4, 32, True, 4)) > 0
    return fp32, int8, int4


def test_the_prompt_runs_one_part_and_each_decode_step_the_other(parts, tmp_path: Path) -> None:
    import onnx

    fp32, int8, int4 = parts
    split = split_by_phase(int8, int4, tmp_path / "split.onnx", "input_ids")
    prompt = np.array([[5, 17, 3, 99, 42, 7]], np.int64)
    got, prompt_part, decode_part = (generate(m, prompt, 4) for m in (tmp_path / "split.onnx", int8, int4))
    np.testing.assert_allclose(got[0], prompt_part[0], rtol=1e-5, atol=1e-5)  # the prompt pass: the INT8 part
    # each decode step: the INT4 part's logits given the same cache (the split graph's own, from the INT8 prompt)
    assert not np.allclose(prompt_part[0], decode_part[0], atol=1e-4)  # the parts differ, so the check below means something
    session_steps = _decode_steps_with_cache_of(tmp_path / "split.onnx", int4, prompt)
    for split_logits, part_logits in session_steps:
        np.testing.assert_allclose(split_logits, part_logits, rtol=1e-5, atol=1e-5)
    graph = onnx.load(str(tmp_path / "split.onnx")).graph
    assert Counter(n.op_type for n in graph.node)["If"] == 1
    assert split.shared >= 1 and any(i.name.startswith("shared/") for i in graph.initializer)  # the embedding table, once
    assert "int8.onnx" in split.describe() and "int4.onnx" in split.describe()
    branches = {a.name: {n.op_type for n in a.g.node} for a in graph.node[-1].attribute}
    assert "MatMulInteger" in branches["then_branch"] and "MatMulNBits" not in branches["then_branch"]
    assert "MatMulNBits" in branches["else_branch"] and "MatMulInteger" not in branches["else_branch"]


def _decode_steps_with_cache_of(split: Path, decode_part: Path, prompt: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Greedy decode steps of the split graph, each step also run on `decode_part` with the same feed."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds

    a, b = open_session(split), open_session(decode_part)
    names = [o.name for o in a.get_outputs()]
    feed = complete_feeds(a, {"input_ids": prompt, "attention_mask": np.ones_like(prompt)})
    pairs = []
    for step in range(4):
        out = dict(zip(names, a.run(None, feed)))
        if step:
            pairs.append((out["logits"], b.run(["logits"], feed)[0]))
        length = feed["attention_mask"].shape[1] + 1
        feed = {"input_ids": out["logits"][:, -1:].argmax(-1), "attention_mask": np.ones((1, length), np.int64),
                **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}
    return pairs


def test_the_engine_onnx_runtime_saves_from_a_split_graph_runs_both_phases(parts, tmp_path: Path) -> None:
    """The x86 backend's engine is the graph ONNX Runtime optimized at the chosen level and saved
    (optimized_model_filepath): its If branches are optimized and saved too, and it generates as the split graph."""
    from edgekd.backends.ort.session import open_session
    from edgekd.config.target import SessionConfig

    _, int8, int4 = parts
    split_by_phase(int8, int4, tmp_path / "split.onnx", "input_ids")
    open_session(tmp_path / "split.onnx", SessionConfig(graph_optimization_level="all"), optimized_model_path=tmp_path / "engine.onnx")
    prompt = np.array([[9, 8, 7, 6, 5]], np.int64)
    for want, got in zip(generate(tmp_path / "split.onnx", prompt, 3), generate(tmp_path / "engine.onnx", prompt, 3)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_graphs_that_do_not_pair_are_refused_and_nothing_is_written(parts, tmp_path: Path) -> None:
    import onnx

    fp32, int8, _ = parts
    other = onnx.load(str(fp32))
    other.graph.output.pop()  # one present fewer
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(NotSplittable, match="differ in inputs or outputs"):
        split_by_phase(int8, tmp_path / "other.onnx", tmp_path / "split.onnx", "input_ids")
    with pytest.raises(NotSplittable, match="no input 'tokens'"):
        split_by_phase(int8, fp32, tmp_path / "split.onnx", "tokens")
    assert not (tmp_path / "split.onnx").exists()


def test_a_4bit_embedding_table_is_stored_once_for_both_phases(parts, tmp_path: Path) -> None:
    """The decode part with its token embedding table 4-bit (GatherBlockQuantized): the tuner gives the
    prompt part the same table (edgekd.backends.ort.decoder_tune), byte for byte, so the split stores
    it once and holds no fp32 table; both phases still give their part's outputs."""
    import onnx

    from edgekd.backends.ort.decoder_tune import _prompt_part

    fp32, int8, _ = parts
    int4e = tmp_path / "int4_emb.onnx"
    quantize_weight_only(fp32, int4e, WeightOnly(4, 32, True, 4, embedding=True))
    first = _prompt_part(int8, int4e, tmp_path)
    assert first != int8 and _prompt_part(int8, int4e, tmp_path) == first  # made once
    split_by_phase(first, int4e, tmp_path / "split.onnx", "input_ids")
    graph = onnx.load(str(tmp_path / "split.onnx")).graph
    shared = {i.name for i in graph.initializer if i.name.startswith("shared/")}
    assert any(n.endswith("_Q4") for n in shared) and any(n.endswith("_scales") for n in shared), shared
    assert not any(list(i.dims) == [128, 64] and i.data_type == onnx.TensorProto.FLOAT for i in graph.initializer)  # no fp32 table
    prompt = np.array([[5, 17, 3, 99, 42, 7]], np.int64)
    np.testing.assert_allclose(generate(tmp_path / "split.onnx", prompt, 0)[0], generate(first, prompt, 0)[0], rtol=1e-5, atol=1e-5)
    for split_logits, part_logits in _decode_steps_with_cache_of(tmp_path / "split.onnx", int4e, prompt):
        np.testing.assert_allclose(split_logits, part_logits, rtol=1e-5, atol=1e-5)
