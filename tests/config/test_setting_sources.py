"""edgekd.config.provenance: where each resolved setting came from, and the recipe overrides the build log prints."""
from __future__ import annotations

from pathlib import Path

from helpers import write

from edgekd.config.loading import BUILTIN_EXAMPLE, ConfigSearch, load_profile, load_project, load_target
from edgekd.config.provenance import describe_overrides, overrides, settings


def _inputs(tmp_path: Path, recipe: str):  # noqa: ANN202
    profile = write(tmp_path / "p.toml", f'description = "test"\n{recipe}')
    return load_project(BUILTIN_EXAMPLE), load_target("x86", ConfigSearch()), load_profile(str(profile), ConfigSearch())


def test_every_setting_says_where_it_came_from(tmp_path: Path) -> None:
    project, target, profile = _inputs(tmp_path, "[recipe.distill]\nepochs = 3\n[budgets]\nlatency_p90_ms = 5.0\n")
    rows = settings(project, target, profile)
    assert rows["project.distill.lr"] == {"value": 0.004, "from": "project"}  # digits.toml sets it
    assert rows["project.distill.losses[0].name"]["from"] == "default"  # digits.toml names no losses: Hinton by default
    assert rows["project.distill.epochs"]["value"] == 3 and rows["project.distill.epochs"]["from"] == "profile"
    assert rows["project.distill.epochs"]["project_value"] == 60 and "[recipe.distill]" in rows["project.distill.epochs"]["by"]
    assert rows["profile.budgets.latency_p90_ms"] == {"value": 5.0, "from": "profile"}
    assert rows["profile.budgets.size_mb"]["from"] == "default"
    assert any(v["from"] == "target" for k, v in rows.items() if k.startswith("target."))
    assert {v["from"] for v in rows.values()} == {"project", "profile", "target", "default"}


def test_only_changed_values_are_logged(tmp_path: Path) -> None:
    project, _, profile = _inputs(tmp_path, "[recipe.distill]\nepochs = 60\nlr = 0.01\n")
    assert {r["setting"]: r["changes"] for r in overrides(project, profile)} == {"project.distill.epochs": False, "project.distill.lr": True}
    assert describe_overrides(project, profile) == [f"profile {profile.name} [recipe.distill] sets distill.lr = 0.01 (the project's 0.004)"]


def test_dry_run_and_report_carry_the_sources(edgekd, cold_build) -> None:
    import json

    plan = json.loads(edgekd("build", "--dry-run", "--json", "--profile", "ci").out)
    assert plan["settings"]["project.distill.epochs"]["from"] == "profile"
    text = edgekd("build", "--dry-run", "--profile", "ci").out
    assert "project.distill.epochs = 12  (profile ci [recipe.distill]" in text and "the project says 60" in text
    report = cold_build.report
    assert report["settings"]["project.distill.epochs"]["from"] == "profile"
    assert "profile ci [recipe.distill] sets distill.epochs = 12 (the project's 60)" in cold_build.err
