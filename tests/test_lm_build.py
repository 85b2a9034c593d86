"""End-to-end: `edgekd build` of a causal-lm project (plain-torch causal language models, local text
files tokenized into blocks by a tokenizer trained here): the task's loss and KD view, perplexity as
the metric with its budgets, export with a dynamic sequence, INT8, and the decoder latency scenarios
(time to first token, decode tokens/s without a KV cache). The text is generated from a small
grammar, so this proves the pipeline, not a model. Distillation recipes for language models come
later; this is the seam."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write

pytestmark = pytest.mark.slow

SUBJECTS = "the cat|a dog|my friend|the old man|a small bird|the teacher".split("|")
VERBS = "sees|likes|follows|finds|calls|paints".split("|")
OBJECTS = "the ball|a red house|the river|some bread|the green door|a long road".split("|")

PROJECT = """name = "grammar-lm"
[teacher]
factory = "edgekd.examples.text:lm_teacher"
args = { width = 32 }
[teacher.train]
epochs = 3
lr = 0.01
batch_size = 16
[student]
factory = "edgekd.examples.text:lm_student"
[data]
files = { train = "train.txt", calib = "calib.txt", test = "test.txt" }
tokenizer = "tokenizer.json"
max_length = 16
[task]
kind = "causal-lm"
[distill]
epochs = 3
lr = 0.01
batch_size = 16
[quantize]
calibration_samples = 16
"""


def sentences(count: int, rng: random.Random) -> str:
    return "\n".join(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} ." for _ in range(count)) + "\n"


@pytest.fixture(scope="module")
def lm_build(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    folder, rng = tmp_path_factory.mktemp("lm"), random.Random(0)
    for split, count in (("train", 400), ("calib", 40), ("test", 80)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    project, out_dir = write(folder / "edgekd.toml", PROJECT), folder / "build"
    code, out, err = run_cli(["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(out_dir)], cache_dir)
    return code, out, err, out_dir


def test_causal_lm_builds_with_perplexity_as_its_metric(lm_build):
    code, out, err, out_dir = lm_build
    assert code == 0, out + err
    report = json.loads((out_dir / "report.json").read_text())
    assert report["task"]["name"] == "causal-lm" and report["task"]["metric"]["higher_is_better"] is False
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    vocab = 2 + len({w for line in SUBJECTS + VERBS + OBJECTS for w in line.split()}) + 1  # specials, words, "."
    for prefix in ("teacher", "student", "onnx_fp32", "int8", "engine"):
        m = metrics[f"{prefix}.perplexity"]
        assert m["method"] == "measured" and 1.0 <= m["value"] < vocab, prefix  # learned: far below a uniform guess
    assert f"{'perplexity':<9}" in out  # the summary names the task's metric
    distill = next(s for s in report["stages"] if s["name"] == "distill")
    assert any(v["budget"] == "distill_perplexity_increase_pct" for v in distill["verdicts"])


def test_the_decoder_scenarios_are_measured(lm_build):
    out_dir = lm_build[3]
    bench = json.loads((out_dir / "bench.json").read_text())
    assert bench["ttft"]["method"] == "measured" and bench["ttft"]["p90_ms"] > 0
    assert bench["decode"]["method"] == "measured" and bench["decode"]["tokens_per_s"] > 0
    assert "no KV cache" in bench["decode"]["how"]
