"""End-to-end: `edgekd build` of a causal-lm project whose teacher is a Hugging Face folder with its
own tokenizer, different from the data's ([distill] vocab_alignment = "shared_tokens"): preflight
accepts it, the teacher stage reads the data's tokens mapped into its own ids, the distill stage
aligns the distributions on the shared tokens (gjsd) and reports the teacher mass it dropped; without
the setting the build stops before training (exit 2). The teacher has random weights and knows only
part of the data's words: this proves the path, not a model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_lm_build import OBJECTS, SUBJECTS, VERBS, sentences

pytestmark = pytest.mark.slow

PROJECT = """name = "aligned-lm"
[teacher.hf]
path = "teacher"
[student]
factory = "edgekd.examples.text:lm_student"
[data]
files = { train = "train.txt", calib = "calib.txt", test = "test.txt" }
tokenizer = "tokenizer.json"
max_length = 16
[task]
kind = "causal-lm"
[distill]
losses = [{ name = "gjsd", params = { beta = 0.5 } }]
temperature = 1.0
epochs = 1
lr = 0.01
batch_size = 16
{alignment}
[quantize]
calibration_samples = 16
"""


def teacher_folder(folder: Path) -> None:
    """A random-weight GPT-2 saved with its own word-level tokenizer: other special spellings, other
    ids, and only the subjects' and objects' words (no verbs, no '.')."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SUBJECTS + OBJECTS + ["zebra"], trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>",
                                   model_input_names=["input_ids", "attention_mask"])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_embd=32, n_layer=1, n_head=2, n_positions=32))
    model.save_pretrained(str(folder))
    fast.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder, rng = tmp_path_factory.mktemp("aligned"), random.Random(0)
    for split, count in (("train", 200), ("calib", 20), ("test", 40)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    teacher_folder(folder / "teacher")
    return folder


def build(folder: Path, cache_dir: Path, alignment: str, name: str) -> tuple[int, str, Path]:
    project = write(folder / f"{name}.toml", PROJECT.replace("{alignment}", alignment))
    out = folder / name
    code, stdout, stderr = run_cli(["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(out)], cache_dir)
    return code, stdout + stderr, out


def test_an_aligned_teacher_with_its_own_tokenizer_teaches_and_the_dropped_mass_is_reported(folder, cache_dir):
    code, log, out = build(folder, cache_dir, 'vocab_alignment = "shared_tokens"', "aligned")
    assert code in (0, 1), log  # 1: a budget of the ci profile may break (random teacher); the stages ran
    report = json.loads((out / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["distill"]["status"] in ("ran", "cached")
    dropped = stages["distill"]["metrics"]["distill.teacher_dropped_mass"]
    assert dropped["method"] == "measured" and 0 < dropped["value"] < 1
    assert any("vocabularies aligned on shared tokens" in n for n in stages["distill"]["notes"])
    teacher = stages["teacher"]["metrics"]["teacher.perplexity"]
    assert teacher["method"] == "not available" and "another vocabulary" in teacher["how"]  # verbs and '.' are unknown to it
    assert "aligned to the data's vocabulary" in json.loads((out / "teacher.json").read_text())["describe"]


def test_without_the_setting_a_teacher_with_another_tokenizer_is_refused_before_training(folder, cache_dir):
    code, log, out = build(folder, cache_dir, "", "refused")
    assert code == 2 and 'set [distill] vocab_alignment = "shared_tokens"' in log, log
    assert not (out / "report.json").exists() or "distill" not in (out / "report.json").read_text()
