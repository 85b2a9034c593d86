"""End-to-end: `edgekd build` of a tiny causal-lm project distilled with GKD: the generalized JSD
loss and on-policy steps (the student samples, the teacher scores), plain-torch LMs on text from a
small grammar. A second build of the same project is served from the stage cache."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write

pytestmark = pytest.mark.slow

WORDS = ("the cat|a dog|my friend|the bird", "sees|likes|finds|calls", "the ball|a house|the river|some bread")

PROJECT = """name = "gkd-lm"
[teacher]
factory = "edgekd.examples.text:lm_teacher"
args = { width = 24, layers = 2 }
[teacher.train]
epochs = 2
lr = 0.01
batch_size = 16
[student]
factory = "edgekd.examples.text:lm_student"
args = { width = 12, layers = 1 }
[data]
files = { train = "train.txt", calib = "calib.txt", test = "test.txt" }
tokenizer = "tokenizer.json"
max_length = 12
[task]
kind = "causal-lm"
[distill]
epochs = 2
lr = 0.01
batch_size = 16
losses = [{ name = "gjsd", params = { beta = 0.5, temperature = 1.0 } }]
[distill.on_policy]
lmbda = 0.5
prompt_tokens = 4
max_new_tokens = 6
seed = 1
[quantize]
calibration_samples = 8
"""


def sentences(count: int, rng: random.Random) -> str:
    return "\n".join(" ".join(rng.choice(part.split("|")) for part in WORDS) + " ." for _ in range(count)) + "\n"


def test_a_gkd_build_notes_its_on_policy_steps_and_caches(tmp_path: Path, cache_dir: Path) -> None:
    rng = random.Random(0)
    for split, count in (("train", 120), ("calib", 16), ("test", 32)):
        write(tmp_path / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((tmp_path / "train.txt").read_text().splitlines(), tmp_path / "tokenizer.json")
    project = write(tmp_path / "edgekd.toml", PROJECT)
    argv = ["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(tmp_path / "build")]
    code, out, err = run_cli(argv, cache_dir)
    assert code == 0, out + err
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    distill = next(s for s in report["stages"] if s["name"] == "distill")
    notes = " ".join(distill["notes"])
    assert "objective 1*gjsd{'beta': 0.5, 'temperature': 1.0}" in notes
    assert "on-policy distillation (GKD, Agarwal et al. 2024): lambda 0.5," in notes
    assert "6 tokens sampled at temperature 1 after 4-token prompts, seed 1" in notes
    assert distill["metrics"]["student.perplexity"]["method"] == "measured"
    code, out, err = run_cli(argv, cache_dir)
    again = json.loads((tmp_path / "build" / "report.json").read_text())
    assert code == 0 and next(s for s in again["stages"] if s["name"] == "distill")["status"] == "cached", out + err


def test_impossible_on_policy_settings_stop_the_build_before_the_teacher_trains(tmp_path: Path, cache_dir: Path) -> None:
    """The preflight runs the on-policy checks: the build stops with exit 2 naming the key, before any stage (no teacher
    trained, no build folder)."""
    rng = random.Random(0)
    for split, count in (("train", 40), ("calib", 8), ("test", 8)):
        write(tmp_path / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((tmp_path / "train.txt").read_text().splitlines(), tmp_path / "tokenizer.json")
    project = write(tmp_path / "edgekd.toml", PROJECT.replace("max_new_tokens = 6", "max_new_tokens = 20"))
    argv = ["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(tmp_path / "build")]
    code, out, err = run_cli(argv, cache_dir)
    assert code == 2, out + err
    assert "key 'distill.on_policy': prompt_tokens + max_new_tokens = 24 exceeds the data's max_length 12" in err
    assert "Traceback" not in err and "[2/" not in out + err and not (tmp_path / "build" / "report.json").exists()
