"""The language-model numbers in report.md, report.html and MODEL_CARD.md (edgekd/report/lm.py,
plots_decoder.py, collapse.py): perplexity against the teacher, next-token agreement, TTFT at the
prompt length, decode tokens/s, peak memory, each with how it was obtained or why it is missing; the
decoder figure; the floor budget shown as >=; the measured collapse curve of a generation-2 student,
and "no measurement" where there is none. Reports are built by hand in a real report's shape
(report_dicts); test_lm_views.py renders a real tiny LM build's."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from report_dicts import conforms, measured_latency, report

from edgekd.config.models import Budgets
from edgekd.pipeline.budgets import check
from edgekd.pipeline.evaluation import AGREEMENT
from edgekd.pipeline.lm_metrics import lm_bench_metrics
from edgekd.pipeline.results import Metric
from edgekd.report import collapse, html, lm, markdown, model_card, plots_decoder
from edgekd.tasks.specs import PERPLEXITY

WHERE = "this host (AMD EPYC), onnxruntime, batch 1, in the bench worker process"
ROWS = ("teacher", "student", "onnx_fp32", "int8", "engine")


def decoder_latency(tokens: int = 16, generations: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    ttft = (2.0 + rng.gamma(2.0, 0.1, 30)).tolist()
    steps = (0.5 + rng.gamma(2.0, 0.02, tokens * generations)).tolist()
    lat = measured_latency()
    lat["ttft"] = {"method": "measured", "scenario": "TimeToFirstToken", "where": WHERE, "runs": 30, "p50_ms": float(np.median(ttft)),
                   "p90_ms": float(np.percentile(ttft, 90)), "prompt_tokens": 48, "kv_cache": True, "samples_ms": ttft, "how": "prompt pass"}
    lat["decode"] = {"method": "measured", "scenario": "DecodeTokensPerSecond", "where": WHERE, "tokens_per_s": 1000 * len(steps) / sum(steps),
                     "new_tokens": tokens, "generations": generations, "prompt_tokens": 48, "kv_cache": True, "samples_ms": steps,
                     "per_token": {"runs": len(steps), "p50_ms": float(np.median(steps)), "p90_ms": float(np.percentile(steps, 90))},
                     "how": "greedy decoding"}
    return lat


def lm_report(budgets: Budgets | None = None, generation: int = 1) -> dict[str, Any]:
    """report_dicts' report as a causal-lm build's: perplexity per model, next-token agreement after
    evaluate, the decoder scenarios and their metrics and verdicts after bench."""
    data = report()
    data["task"] = {"name": "causal-lm", "metric": {"name": "perplexity", "unit": "", "higher_is_better": False,
                                                    "degradation_name": "perplexity_increase_pct"}}
    data["perplexity"] = {row: Metric(20.0 + i, "", "measured", f"perplexity over 500 targets, {row}").to_json() for i, row in enumerate(ROWS)}
    data["latency"] = decoder_latency()
    stages = {s["name"]: s for s in data["stages"]}
    for key, value in (("student", 81.5), ("engine", 80.25)):
        stages["evaluate"]["metrics"][f"{key}.{AGREEMENT}"] = Metric(value, "%", "measured", f"top-1 next token of the {key} vs the teacher's").to_json()
    bench = {k: m for k, m in lm_bench_metrics(data["latency"]).items()}
    stages["bench"]["metrics"] = {k: m.to_json() for k, m in bench.items()}
    stages["bench"]["verdicts"] = [v.to_json() for v in check("bench", bench, budgets or Budgets(), PERPLEXITY)]
    data["lineage"] = {"generation": generation, "teacher_generation": generation - 1, "parents": [], "chain": []}
    conforms(stages["bench"], "stage")
    return data


def test_lm_rows_carry_every_number_with_its_source() -> None:
    rows = {r.label: r for r in lm.lm_rows(lm_report())}
    engine = rows["perplexity: engine"]
    assert engine.value == "24 (+20.00 % vs the teacher)" and engine.method == "measured"
    assert rows["next-token agreement with the teacher: engine"].value == "80.25%"
    ttft = rows["time to first token (p90) at 48 prompt tokens"]
    assert ttft.method == "measured" and "48 prompt tokens" in ttft.how and WHERE in ttft.how
    assert rows["decode tokens/s (greedy, batch 1)"].value.endswith("tokens/s")
    assert "VmHWM" in rows["peak memory of the bench worker"].how


def test_a_classifier_report_has_no_lm_rows_and_missing_numbers_say_why() -> None:
    assert lm.lm_rows(report()) == [] and "Language model" not in markdown.render(report())
    old = lm_report()
    for stage in old["stages"]:
        stage["metrics"] = {k: v for k, v in stage["metrics"].items() if AGREEMENT not in k}
    agreement = {r.label: r for r in lm.lm_rows(old)}["next-token agreement with the teacher: student fp32 (torch)"]
    assert agreement.value == "n/a" and "did not measure it" in agreement.how


def test_markdown_html_and_card_show_the_lm_section_and_the_floor() -> None:
    data = lm_report(Budgets(decode_tokens_per_s=1e6, ttft_ms=100.0))
    md, page, card = markdown.render(data), html.render(data), model_card.render(data)
    for text in (md, card):
        assert "Language model" in text and "time to first token (p90) at 48 prompt tokens" in text
        assert "| decode_tokens_per_s (latency.decode_tokens_per_s) |" in text and ">= 1e+06 tokens/s" in text
    assert "**FAIL**" in md.split("### bench")[1].split("###")[0]  # the floor is broken: decoding is slower than 1e6 tokens/s
    assert "Language model" in page and 'id="fig-decoder"' in page and "&gt;= 1e+06 tokens/s" in page
    assert "Measured numbers: this build host (AMD EPYC" in md


def test_decoder_figure_draws_the_engine_and_says_why_not() -> None:
    plot = plots_decoder.decoder(lm_report(Budgets(ttft_ms=3.0, decode_tokens_per_s=1000.0)))
    assert plot.png is not None and plot.png.startswith(b"\x89PNG") and plots_decoder.COMPARED in plot.notes
    assert "not a decoder" in plots_decoder.decoder(report()).missing
    assert "estimated" in plots_decoder.decoder(report("estimated")).missing


def write_generations(folder: Path, rows: list[dict[str, Any]] | None, host: str = "test host") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edgekd.toml").write_text("name = 'x'\n")
    if rows is not None:
        (folder / collapse.FILE).write_text(json.dumps({"host": host, "generations": rows}))
    return folder / "edgekd.toml"


def curve() -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    return [{"generation": g, "real_fraction": f, "perplexity": float(20 + g * rng.uniform(1, 3) * (1 - f)),
             "distinct_2": float(0.8 - 0.05 * g * (1 - f))} for f in (0.0, 0.2) for g in range(4)]


def test_card_of_generation_2_shows_the_measured_curve_with_file_and_host(tmp_path: Path) -> None:
    project = write_generations(tmp_path / "p", curve())
    data = lm_report(generation=2)
    data["project"]["file"] = str(project)
    data["collapse"] = collapse.section(data)
    card = model_card.render(data)
    found = data["collapse"]
    assert found["file"] == str(tmp_path / "p" / collapse.FILE) and found["host"] == "test host"
    assert f"`{found['file']}`" in card and "host: test host" in card and "| 2 (this one) | 0 |" in card
    assert sum(line.startswith(("| 0", "| 1", "| 2", "| 3")) for line in card.splitlines()) == len(curve())


def test_card_says_no_measurement_when_absent_or_unusable(tmp_path: Path) -> None:
    data = lm_report(generation=3)
    data["project"]["file"] = str(write_generations(tmp_path / "none", None))
    data["collapse"] = collapse.measurement(data["project"]["file"], packaged=tmp_path / "no-checkout" / collapse.FILE)
    assert data["collapse"]["file"] is None and len(data["collapse"]["looked"]) == 2
    assert "no measurement: no lm_generations.json in" in model_card.render(data)
    data["project"]["file"] = str(write_generations(tmp_path / "bad", [{"generation": 1}]))
    data["collapse"] = collapse.section(data)
    assert "not a usable measurement" in data["collapse"]["why"] and "not a usable measurement" in model_card.render(data)


def test_first_generation_students_get_no_collapse_section(tmp_path: Path) -> None:
    data = lm_report(generation=1)
    data["project"]["file"] = str(write_generations(tmp_path / "p", curve()))
    assert collapse.section(data) is None and "Model collapse" not in model_card.render(data)


def test_an_estimated_target_says_what_is_not_estimated() -> None:
    """A causal LM built for a device-only target: TTFT, decode and peak memory are not estimated, and every view says so."""
    data = lm_report()
    data["latency"] = report("estimated")["latency"]
    bench = next(s for s in data["stages"] if s["name"] == "bench")
    bench["metrics"] = {k: m.to_json() for k, m in lm_bench_metrics(data["latency"]).items()}
    rows = {r.label: r for r in lm.lm_rows(data)}
    assert rows["time to first token (p90)"].method == "not available" and "edgekd bench --device" in rows["time to first token (p90)"].how
    for text in (markdown.render(data), model_card.render(data)):
        assert "estimated by the roofline latency model" in text and "are not estimated" in text
    assert "estimated" in plots_decoder.decoder(data).missing and "Language model" in html.render(data)


def test_a_broken_floor_reads_below_its_limit() -> None:
    data = lm_report(Budgets(decode_tokens_per_s=1e6))
    data["failed_budgets"] = [v for s in data["stages"] for v in s["verdicts"] if v["status"] == "fail"]
    data["verdict"] = "fail"
    assert [v["budget"] for v in data["failed_budgets"]] == ["decode_tokens_per_s"]
    assert "tokens/s < 1e+06 tokens/s" in markdown.render(data) and "tokens/s &lt; 1e+06 tokens/s" in html.render(data)
