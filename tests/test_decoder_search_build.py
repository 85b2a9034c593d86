"""End-to-end: [student.search] family = "decoder" (edgekd.stages.search_decoder): the tiny Llama
teacher's config scaled into candidates, each exported with its KV cache, INT4 weight-only, and
measured here by the bench worker (decode tokens/s, TTFT, peak memory); the largest meeting the
decoder budgets is distilled. A budget every candidate meets picks the largest; one none meets stops
the build at the search stage (exit 1) with the smallest candidate's numbers and every candidate
noted. The tiny models prove the pipeline, not a speed."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_decoder_build import PROFILE as DECODER_PROFILE
from test_decoder_build import PROJECT as DECODER_PROJECT
from test_lm_build import sentences

pytestmark = pytest.mark.slow

SEARCH = '[student.search]\nfamily = "decoder"\nwidths = [0.5, 1.0]\ndepths = [0.5]\n'
PROJECT = DECODER_PROJECT.replace('[student.hf]\nbase = "teacher"\nhidden_size = 32\nintermediate_size = 64\n', SEARCH)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder, rng = tmp_path_factory.mktemp("decoder-search"), random.Random(0)
    for split, count in (("train", 200), ("calib", 20), ("test", 40)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    write(folder / "edgekd.toml", PROJECT)
    return folder


def build(folder: Path, cache_dir: Path, floor: float, name: str) -> tuple[int, str, dict]:
    profile = write(folder / f"{name}.toml", DECODER_PROFILE.replace("[budgets]\n", f"[budgets]\ndecode_tokens_per_s = {floor}\n"))
    out = folder / name
    code, stdout, stderr = run_cli(["build", "--project", str(folder / "edgekd.toml"), "--target", "x86", "--profile", str(profile),
                                    "--out", str(out)], cache_dir)
    return code, stdout + stderr, json.loads((out / "report.json").read_text())


def search_stage(report: dict) -> dict:
    return next(s for s in report["stages"] if s["name"] == "search")


def test_a_budget_every_candidate_meets_picks_the_largest(folder, cache_dir):
    code, log, report = build(folder, cache_dir, 1.0, "loose")
    assert code == 0, log
    stage = search_stage(report)
    assert stage["notes"][0].startswith("chose decoder width 1 depth 0.5")
    assert sum(n.startswith("candidate w") for n in stage["notes"]) == 2
    decode = stage["metrics"]["search.decode_tokens_per_s"]
    assert decode["method"] == "measured" and decode["value"] > 1.0 and "MatMulNBits" in decode["how"]
    assert stage["metrics"]["search.peak_rss_mb"]["value"] > 0
    student = json.loads((folder / "loose" / "student.json").read_text())
    assert student["args"]["spec"]["overrides"]["num_hidden_layers"] == 1  # depth 0.5 of 2 layers
    assert student["args"]["spec"]["overrides"]["hidden_size"] == 64
    verdict = next(v for v in stage["verdicts"] if v["budget"] == "decode_tokens_per_s")
    assert verdict["status"] == "pass"


def test_a_budget_no_candidate_meets_stops_at_the_search(folder, cache_dir):
    code, log, report = build(folder, cache_dir, 1e9, "strict")
    assert code == 1, log
    stage = search_stage(report)
    assert stage["notes"][0].startswith("NO candidate fits; smallest is decoder width 0.5")
    verdict = next(v for v in stage["verdicts"] if v["budget"] == "decode_tokens_per_s")
    assert verdict["status"] == "fail"
    assert all(s["status"] == "not run" for s in report["stages"] if s["name"] == "teacher")
