"""edgekd.graph.logits_to_keep on decoders exported the way users export them (optimum's
text-generation-with-past, random weights; Llama with its own head, GPT-2 with the head tied to the
token embedding): unfed, the graph gives every output as exported; fed 1, the last position's logits;
the rewritten graph still fuses, quantizes and splits by phase, and the decoder scenarios feed it."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from decoders import export, generate

from edgekd.graph.graph_edit import NotFusable, verify
from edgekd.graph.logits_to_keep import KEEP, add_logits_to_keep, last_logits_gap

PROMPT = np.array([[5, 17, 3, 99, 42, 7]], np.int64)


def _feed() -> dict[str, np.ndarray]:
    return {"input_ids": PROMPT, "attention_mask": np.ones_like(PROMPT)}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_unfed_it_is_the_export_and_fed_one_the_last_position(tmp_path: Path, kind: str) -> None:
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds

    _, fp32 = export(tmp_path, kind)
    rewrite = add_logits_to_keep(fp32, tmp_path / "keep.onnx")
    assert verify(fp32, tmp_path / "keep.onnx", [_feed()]) == 0.0  # every output, every position, unchanged
    assert last_logits_gap(fp32, tmp_path / "keep.onnx", _feed()) < 1e-6
    session = open_session(tmp_path / "keep.onnx")
    assert KEEP not in {i.name for i in session.get_inputs()}  # optional: callers that do not know it are unaffected
    assert KEEP in {i.name for i in session.get_overridable_initializers()}
    names = [o.name for o in session.get_outputs()]
    feed = complete_feeds(session, _feed())
    full = dict(zip(names, session.run(None, feed)))
    last = dict(zip(names, session.run(None, {**feed, KEEP: np.array([1], np.int64)})))
    assert full["logits"].shape[1] == PROMPT.shape[1] and last["logits"].shape[1] == 1
    np.testing.assert_array_equal(full["present.0.key"], last["present.0.key"])  # the cache is every position's either way
    assert rewrite.logits == "logits" and KEEP in rewrite.describe()
    # generation from the rewritten graph is the export's (the head computes one row per step anyway)
    for a, b in zip(generate(fp32, PROMPT, 3), generate(tmp_path / "keep.onnx", PROMPT, 3)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["phi", "granite", "gptj"])
def test_a_head_with_a_bias_or_a_logits_scale_is_sliced_before_its_matmul(tmp_path: Path, kind: str) -> None:
    """Phi's and GPT-J's heads add a bias (GPT-J's through an Identity), Granite divides the logits by
    logits_scaling: the same for every position, so the Slice still goes before the MatMul."""
    import onnx

    _, fp32 = export(tmp_path, kind)
    rewrite = add_logits_to_keep(fp32, tmp_path / "keep.onnx")
    made_by = onnx.load(str(fp32), load_external_data=False).graph.node
    assert next(n for n in made_by if n.name == rewrite.head).op_type == "MatMul"
    assert verify(fp32, tmp_path / "keep.onnx", [_feed()]) == 0.0
    assert last_logits_gap(fp32, tmp_path / "keep.onnx", _feed()) < 1e-6


def test_a_tied_head_gets_its_own_weight_and_is_quantized(tmp_path: Path) -> None:
    """A head tied to the token embedding reads it through a Transpose, which onnxruntime.quantization
    skips ("non constant B"): the rewrite stores the transposed table as the head's own initializer
    (exact), so INT4 and dynamic INT8 quantize the head too; without it both keep an fp32 head."""
    import onnx

    from edgekd.config.target import TargetQuantize
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    def ops(path: Path) -> Counter:
        return Counter(n.op_type for n in onnx.load(str(path)).graph.node)

    _, fp32 = export(tmp_path, "llama-tied")
    rewrite = add_logits_to_keep(fp32, tmp_path / "keep.onnx")
    assert rewrite.untied == "model.embed_tokens.weight" and "tied embedding" in rewrite.describe()
    assert verify(fp32, tmp_path / "keep.onnx", [_feed()]) == 0.0
    add_logits_to_keep(fp32, tmp_path / "tied.onnx", untie=False)
    for source in ("keep", "tied"):
        quantize_weight_only(tmp_path / f"{source}.onnx", tmp_path / f"{source}4.onnx", WeightOnly(4, 32, True, 4))
        quantize_dynamic_int8(tmp_path / f"{source}.onnx", tmp_path / f"{source}8.onnx", TargetQuantize(), op_types=("MatMul", "Gemm"))
    for bits, op in (("4", "MatMulNBits"), ("8", "MatMulInteger")):  # one more quantized MatMul, one fewer fp32 one: the head
        keep, tied = ops(tmp_path / f"keep{bits}.onnx"), ops(tmp_path / f"tied{bits}.onnx")
        assert (keep[op] - tied[op], tied["MatMul"] - keep["MatMul"]) == (1, 1), (keep, tied)


def test_the_rewrite_fuses_quantizes_and_splits(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from edgekd.config.target import TargetQuantize
    from edgekd.graph.gqa_fusion import fuse_gqa
    from edgekd.graph.phase_split import NotSplittable, split_by_phase
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    _, fp32 = export(tmp_path, "llama")
    keep = tmp_path / "keep.onnx"
    add_logits_to_keep(fp32, keep)
    fuse_gqa(keep, tmp_path / "fused.onnx")
    int8, int4 = tmp_path / "int8.onnx", tmp_path / "int4.onnx"
    quantize_dynamic_int8(tmp_path / "fused.onnx", int8, TargetQuantize(), op_types=("MatMul", "Gemm"))
    assert quantize_weight_only(tmp_path / "fused.onnx", int4, WeightOnly(4, 32, True, 4)) > 0
    split_by_phase(int8, int4, tmp_path / "split.onnx", "input_ids")
    assert verify(int8, tmp_path / "split.onnx", [_feed()]) < 1e-5  # the prompt pass unfed: the INT8 part, all positions
    # fed 1: the last row; dynamic INT8's activation scale then covers that row only, so close, not equal
    assert last_logits_gap(int8, tmp_path / "split.onnx", _feed()) < 0.05
    assert last_logits_gap(int4, int4, _feed()) < 1e-6  # MatMulNBits quantizes activations per row: exact
    other = onnx.load(str(int4))  # the same input with another default cannot be one outer input of both
    next(i for i in other.graph.initializer if i.name == KEEP).CopyFrom(numpy_helper.from_array(np.array([1], np.int64), KEEP))
    onnx.save(other, str(tmp_path / "other.onnx"))
    with pytest.raises(NotSplittable, match="differ in their inputs' defaults"):
        split_by_phase(int8, tmp_path / "other.onnx", tmp_path / "refused.onnx", "input_ids")


def test_a_graph_without_a_matmul_head_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["logits"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 3])])
    onnx.save(helper.make_model(graph), str(tmp_path / "relu.onnx"))
    with pytest.raises(NotFusable, match="made by Relu"):
        add_logits_to_keep(tmp_path / "relu.onnx", tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_the_decoder_scenarios_feed_it(tmp_path: Path) -> None:
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.resolve import load_inputs
    from edgekd.perf.decoder import decoder_io, step_feed

    _, fp32 = export(tmp_path, "llama")
    add_logits_to_keep(fp32, tmp_path / "keep.onnx")
    for model, fed in ((fp32, False), (tmp_path / "keep.onnx", True)):
        session = open_session(model)
        io = decoder_io(session, load_inputs(model))
        assert io is not None and (io.keep == KEEP) is fed
        feed = step_feed(io, PROMPT, None, PROMPT.shape[1])
        assert (KEEP in feed) is fed
        assert session.run([io.logits], feed)[0].shape[1] == (1 if fed else PROMPT.shape[1])
