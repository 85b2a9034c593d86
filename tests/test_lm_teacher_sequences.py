"""End-to-end: `edgekd build` of causal-lm projects whose student trains on the teacher's sequences.
Sequence-level KD from a tiny Hugging Face GPT-2 trained here (its generations made by edgekd, cached
with their provenance, a share of real text mixed in, kd on top), and an API teacher: a JSONL file
with top-k log-probabilities written from a local model by edgekd.distill.api_export, taught with
topk_kd. Evaluation stays on the real test text. The grammar data of test_lm_build."""
from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_lm_build import sentences

pytestmark = pytest.mark.slow

COMMON = """[student]
factory = "edgekd.examples.text:lm_student"
[data]
files = { train = "train.txt", calib = "calib.txt", test = "test.txt" }
tokenizer = "tokenizer.json"
max_length = 16
[task]
kind = "causal-lm"
[quantize]
calibration_samples = 16
"""
SEQUENCE_KD = """name = "grammar-sequence-kd"
[teacher.hf]
model_type = "gpt2"
n_embd = 32
n_layer = 1
n_head = 2
n_positions = 16
[teacher.train]
epochs = 2
lr = 0.01
batch_size = 16
[distill]
epochs = 2
lr = 0.01
batch_size = 16
data = "teacher_generations"
losses = [{ name = "ce" }, { name = "kd", weight = 0.5 }]
[distill.generate]
prompt_tokens = 4
max_new_tokens = 10
strategy = "sample"
top_k = 8
seed = 1
real_fraction = REAL
""" + COMMON
API = """name = "grammar-api"
[teacher]
kind = "api"
responses = "responses.jsonl"
[distill]
epochs = 2
lr = 0.01
batch_size = 16
data = "teacher_generations"
losses = [{ name = "ce" }, { name = "topk_kd" }]
""" + COMMON


def grammar_folder(folder: Path, train: int = 300) -> Path:
    rng = random.Random(0)
    for split, count in (("train", train), ("calib", 40), ("test", 60)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    return folder


def build(folder: Path, project: str, cache_dir: Path) -> tuple[int, str, str, dict | None]:
    code, out, err = run_cli(["build", "--project", str(write(folder / "edgekd.toml", project)), "--target", "x86",
                              "--profile", "ci", "--out", str(folder / "build")], cache_dir)
    report = folder / "build" / "report.json"
    return code, out, err, json.loads(report.read_text()) if report.is_file() else None


def stage(report: dict, name: str) -> dict:
    return next(s for s in report["stages"] if s["name"] == name)


def test_sequence_kd_trains_on_cached_generations_with_their_provenance(tmp_path, cache_dir):
    folder = grammar_folder(tmp_path, train=160)  # the ci profile trains the teacher 8 epochs: keep them short
    code, out, err, report = build(folder, SEQUENCE_KD.replace("REAL", "0.2"), cache_dir)
    assert code == 0, out + err
    distill = stage(report, "distill")
    note = next(n for n in distill["notes"] if n.startswith("teacher generations:"))
    count, prompts = map(int, re.search(r"(\d+) sequences from (\d+) prompts", note).groups())
    blocks = report["provenance"]["data"]["splits"]["train"]
    assert count == prompts == blocks and "transformers model.generate" in note and "made now and cached" in note
    assert any(f"the student trained on {count} teacher generations + {round(count * 0.2 / 0.8)} real train blocks" in n
               for n in distill["notes"])
    entry = cache_dir / "teacher-generations" / re.search(r"(generations-\w+)\.npz", note).group(1)
    provenance = json.loads(entry.with_suffix(".json").read_text())
    assert entry.with_suffix(".npz").is_file() and provenance["count"] == count and provenance["seed"] == 1
    assert provenance["settings"]["strategy"] == "sample" and provenance["settings"]["top_k"] == 8
    assert re.fullmatch(r"[0-9a-f]{64}", provenance["teacher_sha256"]) and provenance["edgekd_version"]
    assert distill["metrics"]["student.perplexity"]["method"] == "measured"  # on the real test split

    code, out, err, report = build(folder, SEQUENCE_KD.replace("REAL", "0.5"), cache_dir)  # the mix changes, not the generations
    assert code == 0, out + err
    again = stage(report, "distill")
    assert again["status"] == "ran" and any(n.startswith("teacher generations:") and "from the cache" in n and entry.name in n
                                            for n in again["notes"])
    assert any(f"+ {count} real train blocks (real_fraction 0.5)" in n for n in again["notes"])


@pytest.fixture(scope="module")
def api_folder(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from edgekd.data.hf_files import load_tokenizer
    from edgekd.distill.api_export import (
        ExportSettings,
        export_responses,
        module_logits,
    )

    folder = grammar_folder(tmp_path_factory.mktemp("api"))
    tokenizer = load_tokenizer(folder / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()
    prompts = [" ".join(line.split()[:3]) for line in (folder / "train.txt").read_text().splitlines()[:80]]
    export_responses(module_logits(model), tokenizer, prompts, folder / "responses.jsonl", ExportSettings(max_new_tokens=6, top_logprobs=4))
    return folder


def test_an_api_teacher_with_logprobs_teaches_by_topk_kd_and_reports_the_dropped_mass(api_folder, cache_dir):
    code, out, err, report = build(api_folder, API, cache_dir)
    assert code == 0, out + err
    teacher = stage(report, "teacher")
    assert teacher["metrics"]["teacher.perplexity"]["method"] == "not available"
    assert "no model" in teacher["metrics"]["teacher.perplexity"]["how"]
    metrics = stage(report, "distill")["metrics"]
    dropped, share, topk = (metrics[f"api.{k}"] for k in ("dropped_mass_mean", "target_share", "topk_mass_mean"))
    assert dropped["method"] == share["method"] == "measured"
    assert 0.0 <= dropped["value"] <= topk["value"] <= 1.0 + 1e-6 and 0.0 < share["value"] <= 1.0
    assert metrics["student.perplexity"]["method"] == "measured"
    verdicts = {v["budget"]: v["status"] for s in report["stages"] for v in s["verdicts"]}
    assert verdicts.get("distill_perplexity_increase_pct") == "not measured"  # no teacher perplexity to compare with


def test_a_malformed_api_line_is_exit_2_naming_file_and_line(api_folder, tmp_path, cache_dir):
    folder = Path(shutil.copytree(api_folder, tmp_path / "bad", ignore=shutil.ignore_patterns("build")))
    lines = (folder / "responses.jsonl").read_text().splitlines()
    write(folder / "responses.jsonl", "\n".join([lines[0], '{"prompt": "the cat"}', *lines[2:]]) + "\n")
    code, out, err, _ = build(folder, API, cache_dir)
    assert code == 2 and f"{folder / 'responses.jsonl'}:2: 'response' is missing" in out + err


@pytest.mark.parametrize(("losses", "logprobs", "says"), [
    ('[{ name = "kd" }]', True, "kd need the teacher's full logits"),
    ('[{ name = "ce" }, { name = "topk_kd" }]', False, "topk_kd needs top_logprobs"),
], ids=["dense-kd", "no-logprobs"])
def test_losses_an_api_teacher_cannot_serve_are_exit_2(api_folder, tmp_path, cache_dir, losses, logprobs, says):
    folder = Path(shutil.copytree(api_folder, tmp_path / "losses", ignore=shutil.ignore_patterns("build")))
    if not logprobs:  # the same responses as an API without logprobs returns them
        lines = [json.loads(line) for line in (folder / "responses.jsonl").read_text().splitlines()]
        write(folder / "responses.jsonl", "\n".join(json.dumps({"prompt": r["prompt"], "response": r["response"]}) for r in lines) + "\n")
    code, out, err, _ = build(folder, API.replace('[{ name = "ce" }, { name = "topk_kd" }]', losses), cache_dir)
    assert code == 2 and says in out + err
