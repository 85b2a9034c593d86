"""`edgekd compile` of a decoder with a KV cache and no data (a random-weight Llama exported the way
users export it: optimum's text-generation-with-past layout): it is measured by perplexity on text its
fp32 graph samples, and the tuner judges INT8/INT4 variants by that perplexity against the profile's
quantize_perplexity_increase_pct, not by top-1 agreement (which near-flat random-weight distributions
break: a quantized variant of such a model agreed with fp32 on ~84 % of positions in peers_real)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from helpers import FAST_PROFILE, run_cli, write

from edgekd.tasks import CausalLM
from edgekd.tasks.export import export_hf

pytestmark = pytest.mark.slow
BUDGET = 3.0


@pytest.fixture(scope="module")
def decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)).eval()
    path = tmp_path_factory.mktemp("decoder") / "model.onnx"
    export_hf(model, CausalLM(vocab_size=256, max_length=16), path, 17, with_past=True)
    model.config.save_pretrained(path.parent)  # config.json beside model.onnx, as optimum-cli writes it
    return path


@pytest.fixture(scope="module")
def compiled(decoder: Path, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[int, str, Path]:
    folder = tmp_path_factory.mktemp("compile")
    profile = write(folder / "p.toml", FAST_PROFILE + f"\n[budgets]\nquantize_accuracy_drop_pt = 1.0\n"
                                                      f"quantize_perplexity_increase_pct = {BUDGET}\n")
    code, stdout, stderr = run_cli(["compile", str(decoder), "--target", "x86", "--profile", str(profile), "--shape",
                                    "input_ids=1x32", "--shape", "attention_mask=1x32", "--out", str(folder / "b")], cache_dir)
    return code, stdout + stderr, folder / "b"


def test_the_report_measures_perplexity_on_text_the_model_sampled(compiled) -> None:
    code, log, out = compiled
    assert code == 0, log
    report = json.loads((out / "report.json").read_text())
    assert report["task"]["name"] == "causal-lm" and report["task"]["metric"]["name"] == "perplexity"
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    for model in ("onnx_fp32", "int8", "engine"):
        metric = metrics[f"{model}.perplexity"]
        assert metric["method"] == "measured" and metric["value"] > 1.0 and "sampled itself" in metric["how"], model
    budgets = {v["budget"]: v for s in report["stages"] for v in s["verdicts"]}
    assert budgets["quantize_perplexity_increase_pct"]["status"] == "pass"
    assert "quantize_accuracy_drop_pt" not in budgets  # a language model's accuracy budget does not apply


def test_the_tuner_judges_quantized_variants_by_perplexity(compiled) -> None:
    out = compiled[2]
    tuning = json.loads((out / "engine.json").read_text())["tuning"]
    assert "quantize_perplexity_increase_pct" in tuning["how"] and tuning["fp32_perplexity"] > 1.0
    fp32 = tuning["fp32_perplexity"]
    quantized = [r for r in tuning["rows"] if r["precision"] != "fp32"]
    assert quantized
    for row in tuning["rows"]:
        over = 100 * (row["perplexity"] - fp32) / fp32 > BUDGET
        assert over == any(p.startswith("perplexity") for p in row["problems"]), row
        assert not any(p.startswith("accuracy") for p in row["problems"]), row  # agreement is reported, not budgeted
    # on random weights quantization moves the near-flat distributions little: every quantized variant holds 3 %,
    # while some agree with fp32's top-1 on far fewer positions (INT4 here: ~78 %) than a 1-point budget would take
    assert all(not any(p.startswith("perplexity") for p in r["problems"]) for r in quantized), quantized
    assert min(r["accuracy"] for r in quantized) < 99.0


def test_the_tuner_ranks_a_decoder_by_its_generation_and_measures_the_fusion(compiled) -> None:
    out = compiled[2]
    tuning = json.loads((out / "engine.json").read_text())["tuning"]
    rows = tuning["rows"]
    assert all(r["ttft_p90_ms"] > 0 for r in rows)
    for r in rows:  # the bench's prompt, then recipe.bench.decode_tokens (32 by default) steps
        assert r["generation_ms"] == pytest.approx(r["ttft_p90_ms"] + 32 * r["p90_ms"])
    assert [r["generation_ms"] for r in rows] == sorted(r["generation_ms"] for r in rows)
    assert "ranked by generation_ms" in tuning["how"] and "on the sessions its decode step was timed on" in tuning["how"]
    variants = tuning["variants"]  # the GroupQueryAttention graph beside the exported one, checked against it
    assert "GroupQueryAttention" in variants["fp32-gqa"] and "outputs within" in variants["fp32-gqa"]
    assert "rotary caches cut to the model's 64 positions" in variants["fp32-gqa"]  # config.json's max_position_embeddings
    assert "the model has 64 positions" in tuning["how"] or "the model has 64 positions" in json.dumps(tuning)
    assert {"fp32", "int8-dynamic", "int8-dynamic-gqa"} <= set(variants)
    assert all(name.endswith("-gqa") for name in variants if "weight-only" in name)
    # the target's embedding = true candidate: the token table 4-bit too, and its prompt/decode split sharing that table
    assert "GatherBlockQuantized" in variants["int4-weight-only-b128-acc4-emb4-gqa"]
    assert "int4-phase-dynamic-gqa+weight-only-b128-acc4-emb4-gqa" in variants
    assert "TTFT p90" in (out / "report.md").read_text()
    schema = json.loads((Path(__file__).parent.parent / "edgekd" / "report" / "report.schema.json").read_text())
    jsonschema.validate(json.loads((out / "report.json").read_text()), schema)  # fused variants' quant formats included


def test_the_tuner_tries_a_prompt_int8_decode_int4_split_and_judges_both_parts(compiled) -> None:
    """edgekd.graph.phase_split: per INT4 variant one graph running the prompt on dynamic INT8 and decode steps
    on INT4; a full-sequence forward runs only its prompt part, so its perplexity is the worse of its parts'."""
    tuning = json.loads((compiled[2] / "engine.json").read_text())["tuning"]
    splits = [name for name in tuning["variants"] if "-phase-" in name]
    int4 = [name for name in tuning["variants"] if name.startswith("int4-weight-only")]
    assert len(splits) == len(int4) >= 1
    perplexity = {(r["variant"], r["session"].get("graph_optimization_level")): r["perplexity"] for r in tuning["rows"]}
    compared = 0
    for name in splits:
        assert name.startswith("int4-phase-dynamic-gqa+weight-only") and "an If on the new-token count" in tuning["variants"][name]
        decode_part = "int4-" + name.split("+", 1)[1]
        for (variant, level), value in perplexity.items():
            parts = [perplexity.get(("int8-dynamic-gqa", level)), perplexity.get((decode_part, level))]
            if variant == name and None not in parts:  # rows are the candidates timed in full (screening may drop some)
                assert value == max(parts)
                compared += 1
    assert compared or not any(r["variant"] in splits for r in tuning["rows"])


def test_every_variant_has_logits_to_keep_and_the_bench_feeds_it(compiled) -> None:
    """edgekd.graph.logits_to_keep: the prompt pass computes the head for its last position only where fed 1
    (the tuner's and the bench's prompt pass); unfed, the engine gives every position's logits (the
    evaluate stage's perplexity, measured on the engine itself)."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.logits_to_keep import KEEP

    out = compiled[2]
    engine = json.loads((out / "engine.json").read_text())
    tuning = engine["tuning"]
    assert any(n.startswith("every decoder variant is made from student_keep.onnx") for n in tuning["left_out"]), tuning["left_out"]
    assert "student_keep.onnx" in tuning["variants"]["fp32"] and "student_keep.onnx" in tuning["variants"]["int8-dynamic"]
    assert KEEP in tuning["how"]  # the prompt pass the candidates were ranked by was fed 1
    session = open_session(out / "engine" / engine["engine_file"])
    assert KEEP in {i.name for i in session.get_overridable_initializers()}
    report = json.loads((out / "report.json").read_text())
    assert KEEP in report["latency"]["ttft"]["how"]
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["engine.perplexity"]["value"] > 1.0, metrics.keys()
    assert [i["name"] for i in tuning["optional_inputs"]] == [KEEP] and tuning["optional_inputs"][0]["default"] == 0
    assert f"- optional input {KEEP}: int64 1, default 0" in (out / "MODEL_CARD.md").read_text()  # a deployer learns to feed it


def _genai_tokens(folder: Path, prompt: list[int], steps: int) -> tuple[list[int], dict]:
    og = pytest.importorskip("onnxruntime_genai")
    import numpy as np

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps)
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], np.int32))
    tokens = []
    while len(tokens) < steps and not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens, json.loads((folder / "genai_config.json").read_text())


def test_onnxruntime_genai_generates_with_the_engine_as_edgekd_does(compiled) -> None:
    """edgekd.backends.ort.genai: genai_config.json beside the engine and the bundle's graph; onnxruntime-genai's
    greedy search over each gives the tokens edgekd's own loop (edgekd.perf.decoder.Greedy, presents fed back)
    gives on the engine. The engine's attention is GroupQueryAttention, so genai shares its key/value buffers."""
    import numpy as np

    from edgekd.backends.ort.session import open_session
    from edgekd.graph.inputs import ModelInputs
    from edgekd.perf.decoder import Greedy, decoder_io

    code, log, out = compiled
    assert code == 0, log
    engine = json.loads((out / "engine.json").read_text())
    session = open_session(out / "engine" / engine["engine_file"])
    io = decoder_io(session, ModelInputs.from_json(engine["inputs"]))
    prompt = [5, 17, 42, 99, 3, 250, 7, 64]
    loop = Greedy(session, io, np.array([prompt], np.int64))
    for _ in range(11):
        loop.step()
    expected = [loop.first_token, *loop.tokens]
    if 2 in expected:  # the config's eos token: genai stops there
        expected = expected[:expected.index(2) + 1]
    for folder, filename in ((out / "engine", engine["engine_file"]), (out / "bundle", engine["source_model"])):
        tokens, config = _genai_tokens(folder, prompt, 12)
        assert tokens == expected, folder.name
        decoder = config["model"]["decoder"]
        assert decoder["filename"] == filename and (folder / filename).is_file()
        assert (decoder["num_hidden_layers"], decoder["num_attention_heads"], decoder["num_key_value_heads"], decoder["head_size"]) == (2, 4, 2, 16)
        assert config["model"]["context_length"] == 64 and config["model"]["eos_token_id"] == 2
        assert config["search"]["past_present_share_buffer"] is True
        threads = config["model"]["decoder"]["session_options"].get("intra_op_num_threads")
        # engine/: the threads edgekd's runner resolves (genai's default can be fewer); bundle/: the device's default when tuned 0
        assert threads >= 1 if folder.name == "engine" else threads in (None, engine["session"]["intra_op_num_threads"] or None)
    report = json.loads((out / "report.json").read_text())
    notes = next(s["notes"] for s in report["stages"] if s["name"] == "compile")
    assert any("onnxruntime-genai model folder" in n and "past_present_share_buffer on" in n for n in notes), notes
    # the bench times the same greedy generation through genai beside edgekd's loop (edgekd.perf.genai_decode)
    genai = report["latency"]["decode"]["onnxruntime_genai"]
    assert genai["method"] == "measured" and genai["shared_buffers"] and genai["same_tokens_as_loop"], genai
    assert genai["per_token"]["runs"] == genai["new_tokens"] * genai["generations"] and genai["tokens_per_s"] > 0
    assert "DecodeTokensPerSecond, onnxruntime-genai" in (out / "report.md").read_text()
