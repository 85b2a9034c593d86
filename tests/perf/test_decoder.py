"""edgekd/perf/decoder.py: TimeToFirstToken and DecodeTokensPerSecond on real decoders (the zoo's tiny
gpt2 exported by optimum with past key/values, and by torch.onnx without a cache), checked against
transformers' own greedy generate() on the same weights; non-decoders get neither, a decoder
scenario the profile leaves out is "not available" with that reason; bad bench
config values are ConfigErrors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from edgekd.common.toolchain import cpu_model
from edgekd.config.loading import ConfigSearch, load_profile
from edgekd.config.models import BENCH_SCENARIOS, BenchConfig, BenchScenario
from edgekd.errors import ConfigError
from edgekd.graph.feeds import make_feeds
from edgekd.graph.resolve import load_inputs
from edgekd.perf.decoder import (
    NO_CACHE,
    Greedy,
    Subject,
    decoder_io,
    decoder_scenarios,
    is_decoder,
)
from edgekd.perf.worker import with_scenarios
from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S
from edgekd.pipeline.lm_metrics import decoder_metrics
from edgekd.tasks.specs import (
    DECODE_TOKENS_PER_SECOND,
    OFFLINE,
    SINGLE_STREAM,
    TIME_TO_FIRST_TOKEN,
)

PROMPT, NEW = 12, 6
FAST = f"""
[recipe.bench]
warmup_runs = 2
min_runs = 10
max_runs = 20
max_seconds = 0.2
offline_max_batch = 2
offline_seconds = 0.02
profile_runs = 0
prompt_tokens = {PROMPT}
decode_tokens = {NEW}
ttft_runs = 4
decode_runs = 2
"""


def session_of(model: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def subject(model: Path) -> Subject:
    inputs = load_inputs(model)
    return Subject(session_of(model), model, inputs, make_feeds(inputs, rows=1), "this host (test)")


def prompt_ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, (1, PROMPT), dtype=np.int64)  # the zoo's gpt2 has 1000 tokens


def greedy_tokens(model: Path) -> list[int]:
    sub = subject(model)
    io = decoder_io(sub.session, sub.inputs)
    assert io is not None
    gen = Greedy(sub.session, io, prompt_ids())
    for _ in range(NEW):
        gen.step()
    return [gen.first_token, *gen.tokens]


def test_kv_cache_greedy_equals_transformers_generate(zoo) -> None:
    """present -> past wiring: the optimum export with past key/values, fed back step by step, picks
    the tokens transformers' own greedy generate() picks on the same weights."""
    import torch

    from edgekd.examples.zoo import build

    model = build("gpt2", "tiny")
    ids = torch.from_numpy(prompt_ids())
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW + 1, do_sample=False,
                             pad_token_id=model.config.eos_token_id)
    assert greedy_tokens(zoo("gpt2", "optimum")) == out[0, PROMPT:].tolist()


def test_no_cache_rerun_equals_kv_cache_path(zoo) -> None:
    cached, rerun = zoo("gpt2", "optimum"), zoo("gpt2", "torch")
    io = decoder_io(session_of(rerun), load_inputs(rerun))
    assert io is not None and not io.kv_cache and io.past == ()
    assert greedy_tokens(rerun) == greedy_tokens(cached)


def test_optimum_export_pairs_every_past_with_its_present(zoo) -> None:
    model = zoo("gpt2", "optimum")
    io = decoder_io(session_of(model), load_inputs(model))
    assert io is not None and io.kv_cache and io.logits == "logits"
    assert {p.name: p.present for p in io.past} == {f"past_key_values.{i}.{kv}": f"present.{i}.{kv}" for i in (0, 1) for kv in ("key", "value")}
    assert all(p.empty_shape == (1, 2, 0, 16) for p in io.past)
    assert io.mask is not None and io.positions is not None


@pytest.mark.parametrize("exporter", ["optimum", "torch"])
def test_edgekd_bench_runs_decoder_scenarios_by_default(edgekd, zoo, tmp_path: Path, exporter: str) -> None:
    from helpers import write

    profile = write(tmp_path / "fast.toml", FAST)  # no `scenarios`: the default, every scenario
    run = edgekd("bench", str(zoo("gpt2", exporter)), "--target", "x86", "--profile", str(profile), "--json")
    assert run.code == 0, run.err
    result = json.loads(run.out)
    ttft, decode = result["ttft"], result["decode"]
    for scenario, name in ((ttft, TIME_TO_FIRST_TOKEN), (decode, DECODE_TOKENS_PER_SECOND)):
        assert scenario["method"] == "measured" and scenario["scenario"] == name and cpu_model() in scenario["where"]
        assert scenario["prompt_tokens"] == PROMPT and scenario["kv_cache"] is (exporter == "optimum")
    assert ttft["runs"] == len(ttft["samples_ms"]) == 4 and 0 < ttft["p50_ms"] <= ttft["p90_ms"]
    assert decode["new_tokens"] == len(decode["generated_ids"]) == NEW and decode["generations"] == 2
    assert decode["per_token"]["runs"] == len(decode["samples_ms"]) == 2 * NEW
    assert decode["tokens_per_s"] > 0 and all(t > 0 for t in decode["tokens_per_s_per_generation"])
    assert (NO_CACHE in decode["how"]) is (exporter == "torch")
    assert set(result["scenarios"]) == {SINGLE_STREAM, OFFLINE}  # report.schema.json closes latency.scenarios

    from edgekd.cli.bench import bench_summary
    from edgekd.report.markdown_perf import measured_latency

    text = bench_summary(Path("model.onnx"), result)
    assert "TTFT" in text and "tokens/s" in text
    table = "\n".join(measured_latency(result, "cpu"))
    assert "| TimeToFirstToken |" in table and "| DecodeTokensPerSecond |" in table


def test_same_greedy_tokens_in_the_worker_for_both_exports(edgekd, zoo, tmp_path: Path) -> None:
    from helpers import write

    profile = write(tmp_path / "fast.toml", FAST)
    ids = []
    for exporter in ("optimum", "torch"):
        run = edgekd("bench", str(zoo("gpt2", exporter)), "--target", "x86", "--profile", str(profile),
                     "--scenario", DECODE_TOKENS_PER_SECOND, "--json")
        result = json.loads(run.out)
        assert result["ttft"]["method"] == "not available" and "not asked for" in result["ttft"]["how"]
        assert "Offline" not in result["scenarios"]
        ids.append([result["decode"]["first_token_id"], *result["decode"]["generated_ids"]])
    assert ids[0] == ids[1]


def test_non_decoders_get_no_decoder_scenarios(zoo) -> None:
    model = zoo("bert", "optimum")  # token ids in, [batch, labels] logits out
    sub = subject(model)
    outputs = {o.name: tuple(o.shape) for o in sub.session.get_outputs()}
    assert not is_decoder(sub.inputs, outputs) and decoder_io(sub.session, sub.inputs) is None
    assert decoder_scenarios(sub, BenchConfig(min_runs=10, max_runs=10)) == {}


def test_only_the_decoder_scenarios_asked_for(zoo) -> None:
    sub = subject(zoo("gpt2", "optimum"))
    base = {"min_runs": 10, "max_runs": 10, "prompt_tokens": PROMPT, "decode_tokens": NEW, "ttft_runs": 2, "decode_runs": 1}
    neither = decoder_scenarios(sub, BenchConfig(**base, scenarios=[SINGLE_STREAM]))
    assert set(neither) == {"ttft", "decode"} and {r["method"] for r in neither.values()} == {"not available"}
    assert all("not asked for (recipe.bench.scenarios is SingleStream;" in r["how"] for r in neither.values())
    one = decoder_scenarios(sub, BenchConfig(**base, scenarios=[TIME_TO_FIRST_TOKEN]))
    assert one["ttft"]["method"] == "measured" and one["decode"]["method"] == "not available"
    # the report's decode row says why: the scenario was not asked for (before, "not a decoder")
    assert "not asked for" in decoder_metrics(one)[DECODE_TOKENS_PER_S].how


def test_prompt_shortened_to_the_models_positions_and_decode_that_cannot_fit(zoo) -> None:
    sub = subject(zoo("gpt2", "optimum"))  # 256 positions
    cfg = BenchConfig(min_runs=10, max_runs=10, prompt_tokens=300, decode_tokens=4, ttft_runs=1, decode_runs=1)
    ttft = decoder_scenarios(sub, cfg.model_copy(update={"scenarios": [TIME_TO_FIRST_TOKEN]}))["ttft"]
    assert ttft["method"] == "measured" and ttft["prompt_tokens"] == 252 and "256 positions" in ttft["how"]
    too_long = decoder_scenarios(sub, cfg.model_copy(update={"decode_tokens": 300}))
    assert {r["method"] for r in too_long.values()} == {"not available"} and set(too_long) == {"ttft", "decode"}
    assert "do not fit: the model has 256 positions" in too_long["decode"]["how"]


def test_a_position_table_the_graph_hides_shortens_the_prompt_to_what_runs(tmp_path: Path) -> None:
    """GPT-J's sin/cos table (64 positions here) is a Constant read by GatherElements: no position
    table edgekd.graph.inputs recognises, and a longer prompt is an index error in ONNX Runtime. The
    prompt is shortened to the longest that runs (found by running it), and the reason is said."""
    from decoders import export

    from edgekd.perf.decoder import model_positions

    _, model = export(tmp_path, "gptj")
    assert model_positions(model) is None
    sub = subject(model)
    cfg = BenchConfig(min_runs=10, max_runs=10, prompt_tokens=100, decode_tokens=4, ttft_runs=1, decode_runs=1)
    results = decoder_scenarios(sub, cfg)
    assert {r["method"] for r in results.values()} == {"measured"}, results
    assert results["ttft"]["prompt_tokens"] == 60 and results["decode"]["prompt_tokens"] == 60
    how = results["ttft"]["how"]
    assert "a 104-token prompt fails in ONNX Runtime" in how and "GatherElements" in how and "64 tokens run" in how, how
    too_long = decoder_scenarios(sub, cfg.model_copy(update={"decode_tokens": 70}))
    assert "70 decode tokens do not fit: a 170-token prompt fails" in too_long["decode"]["how"]


def test_the_positions_a_config_declares_cap_the_prompt(zoo) -> None:
    """The tuner passes the positions the model's config declares (a fused engine's rotary caches
    end there, edgekd.graph.gqa_fusion): the prompt is cut to them with the reason, the smaller of
    those and the graph's own table counting."""
    from edgekd.perf.decoder import decoder_io, make_prompt

    sub = subject(zoo("gpt2", "optimum"))  # 256 positions in its table
    io = decoder_io(sub.session, sub.inputs)
    cfg = BenchConfig(min_runs=10, max_runs=10, prompt_tokens=100, decode_tokens=4, ttft_runs=1, decode_runs=1)
    assert make_prompt(sub, io, cfg).ids.shape == (1, 100)
    capped = make_prompt(sub, io, cfg, declared=40)
    assert capped.ids.shape == (1, 36) and "the model has 40 positions" in capped.note
    assert make_prompt(sub, io, cfg, declared=4096).ids.shape == (1, 100)


@pytest.mark.parametrize("line", ['scenarios = ["SingleStream", "Decode"]', "prompt_tokens = 0", "decode_tokens = -1",
                                  "ttft_runs = 0", "decode_runs = 0", "scenarios = []"])
def test_bad_bench_values_are_config_errors(tmp_path: Path, line: str) -> None:
    from helpers import write

    path = write(tmp_path / "bad.toml", f"[recipe.bench]\n{line}\n")
    with pytest.raises(ConfigError, match=line.split(" ")[0]):
        load_profile(str(path), ConfigSearch((), ()))


def test_unknown_scenario_override_is_a_config_error(edgekd, zoo) -> None:
    with pytest.raises(ConfigError, match="TokensPerMinute"):
        with_scenarios(BenchConfig(), ["SingleStream", "TokensPerMinute"])
    run = edgekd("bench", str(zoo("gpt2", "optimum")), "--target", "x86", "--scenario", "TokensPerMinute")
    assert run.code == 2 and "TokensPerMinute" in run.err


def test_config_scenario_names_match_the_task_seam() -> None:
    """The config layer spells the scenario names (it sits below tasks); they must be the seam's."""
    from edgekd.tasks import get_task

    assert get_args(BenchScenario) == BENCH_SCENARIOS
    assert set(get_task("causal-lm", vocab_size=1000, max_length=64).latency_scenarios()) <= set(BENCH_SCENARIOS)
    assert BenchConfig().scenarios == list(BENCH_SCENARIOS)
