"""End-to-end: `edgekd build` of a tiny Hugging Face Llama (teacher and student from a config, random
start, trained briefly on a generated grammar) for x86: the student exports with a KV cache
(optimum text-generation-with-past), the tuner measures dynamic INT8, MatMulNBits int4/int8 weight-only
and fp32 on a decode step with the cache and judges each by perplexity against
quantize_perplexity_increase_pct, and the bench decodes with the cache; for mobile-npu the prefill and a static decode graph become HTP
context binaries. Proves the pipeline, not a model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_lm_build import sentences

pytestmark = pytest.mark.slow

PROJECT = """name = "grammar-llama"
[teacher.hf]
model_type = "llama"
hidden_size = 64
intermediate_size = 128
num_hidden_layers = 2
num_attention_heads = 4
num_key_value_heads = 2
max_position_embeddings = 64
[teacher.train]
lr = 0.01
batch_size = 16
[student.hf]
base = "teacher"
hidden_size = 32
intermediate_size = 64
[data]
files = { train = "train.txt", calib = "calib.txt", test = "test.txt" }
tokenizer = "tokenizer.json"
max_length = 16
[task]
kind = "causal-lm"
[distill]
lr = 0.01
batch_size = 16
[quantize]
calibration_samples = 16
"""

PROFILE = """description = "decoder build test: one epoch, short timing, a perplexity budget for quantization"
[budgets]
export_parity_max_abs_diff = 1e-4
quantize_perplexity_increase_pct = 2.0
[recipe.teacher_train]
epochs = 2
[recipe.distill]
epochs = 2
[recipe.bench]
warmup_runs = 5
min_runs = 20
max_runs = 200
max_seconds = 0.5
offline_max_batch = 4
offline_seconds = 0.05
profile_runs = 5
decode_tokens = 8
prompt_tokens = 16
[recipe.tune]
rounds = 2
runs_per_round = 20
"""


@pytest.fixture(scope="module")
def llama_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder, rng = tmp_path_factory.mktemp("llama"), random.Random(0)
    for split, count in (("train", 200), ("calib", 20), ("test", 40)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    return write(folder / "edgekd.toml", PROJECT), write(folder / "decoder.toml", PROFILE)


def build(project: tuple[Path, Path], target: str, cache_dir: Path) -> tuple[int, str, Path]:
    out = project[0].parent / f"build-{target}"
    code, stdout, stderr = run_cli(["build", "--project", str(project[0]), "--target", target, "--profile", str(project[1]),
                                    "--out", str(out)], cache_dir)
    return code, stdout + stderr, out


@pytest.fixture(scope="module")
def llama_build(llama_project: tuple[Path, Path], cache_dir: Path) -> tuple[int, str, Path]:
    return build(llama_project, "x86", cache_dir)


def test_the_student_exports_with_a_kv_cache(llama_build) -> None:
    code, log, out = llama_build
    assert code == 0, log
    report = json.loads((out / "report.json").read_text())
    export = next(s for s in report["stages"] if s["name"] == "export")
    assert any("text-generation-with-past" in n for n in export["notes"])
    engine = json.loads((out / "engine.json").read_text())
    assert [i["name"] for i in engine["inputs"]["inputs"] if i["role"] == "past_key_values"] == [
        f"past_key_values.{layer}.{kind}" for layer in (0, 1) for kind in ("key", "value")]


def test_the_tuner_judges_weight_only_variants_by_perplexity_on_a_decode_step(llama_build) -> None:
    import jsonschema

    from edgekd.report.build_report import SCHEMA_FILE

    out = llama_build[2]
    jsonschema.validate(json.loads((out / "report.json").read_text()), json.loads(SCHEMA_FILE.read_text()))  # int4 rows included
    tuning = json.loads((out / "engine.json").read_text())["tuning"]
    variants = {r["variant"] for r in tuning["rows"] + tuning["pruned"]}  # pruned: cut before full timing, with why
    assert {"fp32", "int8-dynamic", "int4-weight-only-b32", "int8-weight-only-b32"} <= variants
    assert "decode step" in tuning["how"] and "quantize_perplexity_increase_pct" in tuning["how"]
    fp32 = tuning["fp32_perplexity"]
    for row in tuning["rows"]:
        assert row["perplexity"] > 1.0 and row["p90_ms"] > 0
        over = 100 * (row["perplexity"] - fp32) / fp32 > 2.0
        assert over == any(p.startswith("perplexity") for p in row["problems"]), row
    chosen = tuning["rows"][tuning["chosen"]]
    assert not chosen["problems"] or all(r["problems"] for r in tuning["rows"])


def test_the_engine_is_evaluated_and_decodes_with_its_cache(llama_build) -> None:
    out = llama_build[2]
    report = json.loads((out / "report.json").read_text())
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["engine.perplexity"]["method"] == "measured" and metrics["engine.perplexity"]["value"] > 1.0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["decode"]["method"] == "measured" and bench["decode"]["kv_cache"] is True
    assert bench["decode"]["tokens_per_s"] > 0 and "the cache of the steps before as past" in bench["decode"]["how"]


@pytest.mark.qnn
def test_the_htp_gets_a_prefill_and_a_static_decode_context_binary(llama_project: tuple[Path, Path], cache_dir: Path) -> None:
    pytest.importorskip("onnxruntime_qnn")
    code, log, out = build(llama_project, "mobile-npu", cache_dir)
    assert code == 0, log
    engine = sorted(p.name for p in (out / "engine").iterdir())
    assert engine == ["decode_ctx.onnx", "decode_ctx_qnn.bin", "student_ctx.onnx", "student_ctx_qnn.bin"]
    report = json.loads((out / "report.json").read_text())
    compile_stage = next(s for s in report["stages"] if s["name"] == "compile")
    agreement = compile_stage["metrics"]["engine.decode_step_agreement_pct"]
    assert agreement["method"] == "measured" and 0 <= agreement["value"] <= 100
    assert any(n.startswith("decode graph partition:") for n in compile_stage["notes"])
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    assert metrics["engine.perplexity"]["method"] == "measured" and metrics["latency.p90_ms"]["method"] == "estimated"
