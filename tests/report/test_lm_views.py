"""A real tiny causal-LM build (the grammar project of tests/test_lm_build.py, ci profile), built once
for this module: what its report.json holds (next-token agreement, TTFT/decode/peak-memory metrics
and verdicts), the views that show them, the LM budgets re-checked from the cache with a profile that
sets them, and `edgekd gate` on its real report (perplexity, TTFT, decode tokens/s, peak memory) with
its JUnit and Markdown outputs."""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_lm_build import PROJECT, sentences

from edgekd.gate import junit
from edgekd.gate import markdown as gate_markdown
from edgekd.gate.run import gate
from edgekd.report import markdown, model_card
from edgekd.report.build_report import SCHEMA_FILE

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def lm_build(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, Path]:
    folder, rng = tmp_path_factory.mktemp("lm-views"), random.Random(0)
    for split, count in (("train", 400), ("calib", 40), ("test", 80)):
        write(folder / f"{split}.txt", sentences(count, rng))
    train_word_tokenizer((folder / "train.txt").read_text().splitlines(), folder / "tokenizer.json")
    project = write(folder / "edgekd.toml", PROJECT)
    code, out, err = run_cli(["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(folder / "build")], cache_dir)
    assert code == 0, out + err
    return folder, project


def load(build: Path) -> dict[str, Any]:
    return json.loads((build / "report.json").read_text())


def metrics(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: m for s in report["stages"] for k, m in s["metrics"].items()}


def test_report_holds_agreement_and_decoder_numbers(lm_build) -> None:
    report = load(lm_build[0] / "build")
    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    found = metrics(report)
    for key in ("student", "engine"):
        agreement = found[f"{key}.next_token_agreement_pct"]
        assert agreement["method"] == "measured" and 0 < agreement["value"] <= 100 and "teacher" in agreement["how"]
    ttft, decode, peak = found["latency.ttft_p90_ms"], found["latency.decode_tokens_per_s"], found["latency.peak_rss_mb"]
    assert ttft["value"] == pytest.approx(report["latency"]["ttft"]["p90_ms"])
    assert f"{report['latency']['ttft']['prompt_tokens']} prompt tokens" in ttft["how"]
    assert decode["value"] == pytest.approx(report["latency"]["decode"]["tokens_per_s"]) and peak["value"] > 0
    bench = next(s for s in report["stages"] if s["name"] == "bench")
    assert {v["budget"]: v["floor"] for v in bench["verdicts"]} == {"latency_p90_ms": False, "ttft_ms": False,
                                                                    "decode_tokens_per_s": True, "peak_memory_mb": False}
    card, md = (lm_build[0] / "build" / "MODEL_CARD.md").read_text(), (lm_build[0] / "build" / "report.md").read_text()
    assert card == model_card.render(report) and md == markdown.render(report)
    assert "next-token agreement with the teacher: engine" in card and "time to first token (p90) at" in md


def test_lm_budgets_are_checked_from_the_cache(lm_build, cache_dir: Path) -> None:
    """ci's recipe with LM budgets: a decode floor no CPU reaches fails the build at bench; no training re-runs."""
    folder, project = lm_build
    ci = (ROOT / "profiles" / "ci.toml").read_text()
    profile = write(folder / "lm-ci.toml", ci.replace("[budgets]\n", "[budgets]\nttft_ms = 1000.0\ndecode_tokens_per_s = 1e9\n"
                                                       "peak_memory_mb = 1e5\noverall_perplexity_increase_pct = 1000.0\n", 1))
    code, out, err = run_cli(["build", "--project", str(project), "--target", "x86", "--profile", str(profile),
                              "--out", str(folder / "strict")], cache_dir)
    assert code != 0 and "decode_tokens_per_s" in out + err
    report = load(folder / "strict")
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert all(status[name] == "cached" for name in ("teacher", "distill", "export", "quantize")), status  # compile re-tunes against the budgets
    verdicts = {v["budget"]: v["status"] for s in report["stages"] for v in s["verdicts"]}
    assert (verdicts["ttft_ms"], verdicts["decode_tokens_per_s"], verdicts["peak_memory_mb"]) == ("pass", "fail", "pass")
    assert verdicts["overall_perplexity_increase_pct"] == "pass"
    assert ">= 1e+09 tokens/s" in (folder / "strict" / "report.md").read_text()


def slower_decoder(report: dict[str, Any], factor: float) -> dict[str, Any]:
    """Every TTFT and per-token decode sample multiplied by `factor`; peak memory too."""
    out = copy.deepcopy(report)
    lat = out["latency"]
    lat["ttft"]["samples_ms"] = [s * factor for s in lat["ttft"]["samples_ms"]]
    lat["decode"]["samples_ms"] = [s * factor for s in lat["decode"]["samples_ms"]]
    lat["peak_rss_mb"] *= factor
    return out


def save(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def test_gate_on_real_lm_reports(lm_build, tmp_path: Path) -> None:
    report = load(lm_build[0] / "build")
    same = gate(save(report, tmp_path / "a" / "report.json"), save(report, tmp_path / "b" / "report.json"))
    checks = {c.name: c for c in same.checks}
    assert checks["engine perplexity"].status == "pass" and checks["engine perplexity"].change == 0
    assert checks["peak memory"].status == "pass"
    for name in ("time to first token p90", "decode tokens/s"):  # the same samples: never a failure; few noisy runs may be inconclusive
        assert checks[name].status in ("pass", "inconclusive") and checks[name].change == 0
    worse = gate(save(slower_decoder(report, 2.0), tmp_path / "c" / "report.json"), tmp_path / "a" / "report.json")
    found = {c.name: c for c in worse.checks}
    assert found["peak memory"].failed and worse.verdict == "fail"
    assert found["time to first token p90"].change == pytest.approx(100.0) and found["decode tokens/s"].change == pytest.approx(-50.0)
    # twice as slow is surely worse unless a few huge outliers (a loaded CI machine) widen the interval: never a pass
    assert found["time to first token p90"].status in ("fail", "inconclusive") and found["decode tokens/s"].status in ("fail", "inconclusive")
    xml, md = junit.render(worse), gate_markdown.render(worse)
    for name in ("time to first token p90", "decode tokens/s", "peak memory", "engine perplexity"):
        assert f'name="{name}"' in xml and f"| {name} |" in md.replace("**", "")
    assert "Decoders: time to first token" in md
