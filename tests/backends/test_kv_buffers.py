"""edgekd.backends.ort.kv_buffers on decoders exported the way users export them (optimum's
text-generation-with-past, random weights), fused into GroupQueryAttention by edgekd.graph.gqa_fusion:
one buffer per layer bound as past and present gives the logits and presents of feeding the presents
back, in greedy generation, in a fixed decode step timed again and again, and in a prompt/decode
split engine (If branches); a graph whose attention is not GroupQueryAttention keeps the copying path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from decoders import LAYERS, VOCAB, export

from edgekd.backends.ort.kv_buffers import KvBuffers
from edgekd.backends.ort.session import open_session
from edgekd.backends.runners import OrtRunner
from edgekd.config.target import SessionConfig
from edgekd.graph.decoder import complete_feeds, shared_kv_pairs
from edgekd.graph.gqa_fusion import fuse_gqa
from edgekd.graph.feeds import make_feeds
from edgekd.graph.resolve import load_inputs
from edgekd.perf.decoder import Greedy, Subject, decoder_io, decoder_scenarios

PROMPT = np.random.default_rng(3).integers(0, VOCAB, (1, 9), dtype=np.int64)


@pytest.fixture(scope="module")
def fused(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the exported Llama, its GroupQueryAttention-fused graph)."""
    tmp = tmp_path_factory.mktemp("kv")
    _, source = export(tmp, "llama")
    fuse_gqa(source, tmp / "fused.onnx", 64)
    return source, tmp / "fused.onnx"


def test_every_past_of_a_fused_graph_pairs_with_its_present_and_an_unfused_one_has_none(fused: tuple[Path, Path]) -> None:
    source, path = fused
    pairs = shared_kv_pairs(onnx.load(str(path), load_external_data=False).graph)
    assert pairs == {f"past_key_values.{n}.{kv}": f"present.{n}.{kv}" for n in range(LAYERS) for kv in ("key", "value")}
    assert shared_kv_pairs(onnx.load(str(source)).graph) is None  # Concat of past and new keys: no shared buffer
    assert OrtRunner(source, SessionConfig()).kv is None and OrtRunner(path, SessionConfig()).kv is not None


@pytest.mark.parametrize("room", [12, 0])  # room for every step up front, or buffers that grow as the steps need
def test_greedy_generation_in_shared_buffers_equals_feeding_presents_back(fused: tuple[Path, Path], room: int) -> None:
    _, path = fused
    session = open_session(path)
    io = decoder_io(session, load_inputs(path))
    assert io is not None
    copied = Greedy(session, io, PROMPT)
    shared = Greedy(session, io, PROMPT, KvBuffers.for_session(session, path), room)
    assert shared.first_token == copied.first_token
    buffers = shared.kv.buffers
    for step in range(10):
        copied.step()
        shared.step()
        for slot, a in zip(io.past, copied._presents):
            np.testing.assert_allclose(buffers[slot.name][:, :, :a.shape[2]], a, atol=1e-5, err_msg=f"step {step}")
    assert shared.tokens == copied.tokens and len(set(shared.tokens)) > 1


def _decode_step(session, path: Path) -> dict[str, np.ndarray]:
    """1 token after the prompt's cache (the presents of a copying prompt pass), the mask over both."""
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, complete_feeds(session, {"input_ids": PROMPT, "attention_mask": np.ones_like(PROMPT)}))))
    return {"input_ids": out["logits"][:, -1:].argmax(-1), "attention_mask": np.ones((1, PROMPT.shape[1] + 1), np.int64),
            **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}


def test_a_fixed_decode_step_run_again_and_again_gives_the_copying_outputs(fused: tuple[Path, Path]) -> None:
    """The tuner's and the bench's decode-step feed: loaded into the buffers once, each run rewriting
    the same new position; a new feed (another past) is loaded again."""
    _, path = fused
    runner = OrtRunner(path, SessionConfig())
    feed = _decode_step(runner.session, path)
    expected = runner.session.run(None, feed)
    for _ in range(3):
        got = runner.run(feed)
        for a, b in zip(expected, got):
            np.testing.assert_allclose(b, a, atol=1e-5)
    shorter = {n: (a[:, :, :4] if n.startswith("past") else a[:, :5] if n == "attention_mask" else a) for n, a in feed.items()}
    for a, b in zip(runner.session.run(None, shorter), runner.run(shorter)):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_a_prompt_decode_split_engine_shares_its_buffers_through_the_if(fused: tuple[Path, Path]) -> None:
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.phase_split import split_by_phase
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    _, path = fused
    int8, int4, split = (path.parent / f"{n}.onnx" for n in ("int8", "int4", "split"))
    quantize_dynamic_int8(path, int8, TargetQuantize(), op_types=("MatMul", "Gemm"))
    quantize_weight_only(path, int4, WeightOnly(4, 32, True, 4))
    split_by_phase(int8, int4, split, "input_ids")
    runner = OrtRunner(split, SessionConfig())
    assert runner.kv is not None and len(runner.kv.pairs) == 2 * LAYERS
    io = decoder_io(runner.session, load_inputs(split))
    assert io is not None
    copied, shared = Greedy(runner.session, io, PROMPT), Greedy(runner.session, io, PROMPT, runner.kv, 8)
    for _ in range(8):
        copied.step()
        shared.step()
    assert shared.tokens == copied.tokens


def test_the_bench_says_how_the_cache_was_kept(fused: tuple[Path, Path]) -> None:
    from edgekd.config.models import BenchConfig

    source, path = fused
    for model, shared in ((path, True), (source, False)):
        runner = OrtRunner(model, SessionConfig())
        inputs = load_inputs(model)
        subject = Subject(runner.session, model, inputs, make_feeds(inputs, rows=1), "this host (test)", runner.kv)
        result = decoder_scenarios(subject, BenchConfig(prompt_tokens=8, decode_tokens=4, decode_runs=1, ttft_runs=2))
        assert result["decode"]["method"] == "measured" and result["ttft"]["method"] == "measured"
        assert ("share one buffer per layer" in result["decode"]["how"]) is shared
        assert ("share one buffer per layer" in result["ttft"]["how"]) is shared


def test_a_logits_to_keep_prompt_pass_runs_copying_and_the_steps_go_on_in_the_buffers(fused: tuple[Path, Path]) -> None:
    """IOBinding cannot bind an overridable initializer: the prompt pass fed logits_to_keep 1 (the
    bench's and the tuner's) runs with session.run, its presents loaded into the buffers."""
    from edgekd.graph.logits_to_keep import KEEP, add_logits_to_keep

    _, path = fused
    keep = path.parent / "keep.onnx"
    add_logits_to_keep(path, keep)
    runner = OrtRunner(keep, SessionConfig())
    io = decoder_io(runner.session, load_inputs(keep))
    assert io is not None and io.keep == KEEP and runner.kv is not None
    copied, shared = Greedy(runner.session, io, PROMPT), Greedy(runner.session, io, PROMPT, runner.kv, 6)
    assert runner.kv.pending is not None  # the prompt's presents: copied into the buffers by the first step
    for _ in range(6):
        copied.step()
        shared.step()
    assert shared.tokens == copied.tokens and runner.kv.pending is None and runner.kv.length == PROMPT.shape[1] + 6
    feed = complete_feeds(runner.session, {"input_ids": PROMPT, "attention_mask": np.ones_like(PROMPT), KEEP: np.ones(1, np.int64)})
    assert runner.run(feed)[0].shape == (1, 1, VOCAB)


def test_a_batch_of_prompts_then_one_row_gives_the_copying_outputs(fused: tuple[Path, Path]) -> None:
    """The bench's Offline scenario runs batches (an empty past per row) on the same runner as the
    batch-1 decoder scenarios: the buffers follow the rows the feed has."""
    _, path = fused
    runner = OrtRunner(path, SessionConfig())
    ids = np.random.default_rng(4).integers(0, VOCAB, (3, 9), dtype=np.int64)
    for batch in (ids, ids[:1], ids):
        feed = complete_feeds(runner.session, {"input_ids": batch, "attention_mask": np.ones_like(batch)})
        for a, b in zip(runner.session.run(None, feed), runner.run(feed)):
            np.testing.assert_allclose(b, a, atol=1e-5)
