"""MODEL_CARD.md (edgekd/report/model_card.py) from real builds: its sections and numbers come from
report.json; a student distilled from the previous build's student is generation 2 and every view
of the build warns about generation decay."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write

from edgekd.distill import lineage
from edgekd.graph import provenance
from edgekd.report import markdown, model_card

ROOT = Path(__file__).parent.parent.parent
EXAMPLE = (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
TEACHER_BLOCK = EXAMPLE[EXAMPLE.index("[teacher]"):EXAMPLE.index("[student]")]
SECTIONS = ["## Model", "## Teacher", "## Data", "## Distillation", "## Lineage", "## Evaluation on ", "## Toolchain"]

pytestmark = pytest.mark.slow


def _schema() -> dict:
    from edgekd.report.build_report import SCHEMA_FILE

    return json.loads(SCHEMA_FILE.read_text())


def test_card_of_a_build_has_every_section_with_the_reports_numbers(cold_build):
    assert cold_build.code == 0, cold_build.err
    report, card = cold_build.report, (cold_build.out_dir / "MODEL_CARD.md").read_text()
    assert card == model_card.render(report)  # written from report.json only
    positions = [card.index(title) for title in SECTIONS]
    assert positions == sorted(positions)
    prov, lin = report["provenance"], report["lineage"]
    assert "| generation | 1 (teacher generation 0) |" in card and "Warning" not in card
    assert report["task"]["metric"] == {"name": "accuracy", "unit": "%", "higher_is_better": True, "degradation_name": "accuracy_drop_pt"}
    assert f"| task | {report['task']['name']}; quality metric accuracy (higher is better); quality budgets *_accuracy_drop_pt |" in card
    assert prov["teacher"]["sha256"] in card and "trained from labels in this build" in card
    assert prov["data"]["sha256"] in card and f"test {prov['data']['splits']['test']:,} samples" in card
    assert f"{prov['distill']['epochs']} epochs, lr {prov['distill']['lr']}" in card and "| hinton | 1 | defaults |" in card
    assert "teacher (generation 0) -> student (generation 1)" in card and lin["parents"][0]["sha256"] in card
    verdicts = [v for s in report["stages"] for v in s["verdicts"]]
    budget_rows = [line for line in card.splitlines() if line.startswith(tuple(f"| {v['stage']} | {v['budget']} (" for v in verdicts))]
    assert len(budget_rows) == len(verdicts) and all(line.endswith(("| pass |", "| no budget |")) for line in budget_rows)
    for key in ("teacher", "student", "onnx_fp32", "int8", "engine"):
        assert report["accuracy"][key]["how"] in card
    lat = report["latency"]
    assert lat["method"] == "measured" and f"latency (measured, batch 1, {lat['runs']} runs" in card
    assert all(f"- {name} {v}" in card for name, v in report["toolchain"].items()) and f"- edgekd {report['edgekd_version']}" in card
    for name in ("student.safetensors", "student.onnx", "student_int8.onnx"):
        artefact = next(s["artefacts"][name] for s in report["stages"] if name in s["artefacts"])
        assert f"| {name} | {artefact['bytes']:,} | `{artefact['sha256']}` |" in card


def test_card_of_a_report_without_provenance_says_so(cold_build):
    """report.json files written before provenance existed still render (`edgekd bench --device` rewrites the views)."""
    old = {k: v for k, v in cold_build.report.items() if k not in ("provenance", "lineage", "warnings")}
    card = model_card.render(old)
    assert card.count(model_card.MISSING) == 5 and "## Evaluation on " in card
    assert "Warning" not in markdown.render(old)


def test_self_distillation_is_generation_2_and_warns_everywhere(cold_build, edgekd, tmp_path):
    """The teacher is the previous build's student.safetensors (self-distillation): generation 1 read
    from its header, so this student is generation 2."""
    import jsonschema

    assert cold_build.code == 0
    checkpoint = cold_build.out_dir / "student.safetensors"
    teacher = f'[teacher]\nfactory = "edgekd.examples.digits:student"\nargs = {{ width = 8 }}\ncheckpoint = "{checkpoint}"\n'
    project = write(tmp_path / "edgekd.toml", EXAMPLE.replace(TEACHER_BLOCK, teacher + "\n"))
    out = tmp_path / "gen2"
    run = edgekd("build", "--project", str(project), "--profile", "ci", out_dir=out)
    assert run.code == 0, run.err
    report = run.report
    jsonschema.validate(report, _schema())
    lin = report["lineage"]
    assert (lin["teacher_generation"], lin["generation"]) == (1, 2)
    assert lin["parents"][0]["generation_source"] == "edgekd.generation in the checkpoint's safetensors metadata"
    assert report["provenance"]["teacher"]["sha256"] == lineage.file_facts(checkpoint, "torch")[0]
    [warning] = report["warnings"]
    assert "generation 2" in warning and "decay" in warning
    assert f"> **Warning:** {warning}" in (out / "report.md").read_text()
    assert f"> **Warning:** {warning}" in (out / "MODEL_CARD.md").read_text()
    distill = next(s for s in report["stages"] if s["name"] == "distill")
    assert f"WARNING: {warning}" in distill["notes"]
    for model in ("student.onnx", "student_int8.onnx", "engine/engine.onnx"):
        assert provenance.read_onnx_props(out / model)["edgekd.generation"] == "2"
