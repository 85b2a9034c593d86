"""The CLI as a user meets it: help, listings, dry runs, and one-line errors with distinct exit codes."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import write

ROOT = Path(__file__).parents[2]


def _one_line_error(run) -> str:
    """The error is one line (progress lines may come before it), with no traceback."""
    errors = [line for line in run.err.strip().splitlines() if line.startswith("edgekd: error: ")]
    assert len(errors) == 1 and run.err.strip().endswith(errors[0]), run.err
    assert "Traceback" not in run.err
    return errors[0]


@pytest.mark.parametrize("args", [["--help"], ["build", "--help"], ["targets", "--help"], ["targets", "show", "--help"], ["profiles", "--help"]])
def test_every_command_has_help(edgekd, args):
    run = edgekd(*args)
    assert run.code == 0 and "Usage:" in run.out


def test_targets_lists_shipped_files_and_shows_alias(edgekd):
    listing = edgekd("targets", "--json")
    assert listing.code == 0
    names = {row["name"] for row in json.loads(listing.out)}
    assert {"x86-avx2", "x86-avx512-vnni"} <= names
    shown = edgekd("targets", "show", "x86", "--json")
    data = json.loads(shown.out)
    assert data["name"] in names and "alias 'x86'" in data["via"] and data["runtime"] == "onnxruntime-cpu"
    text = edgekd("targets")
    assert "x86-avx2" in text.out and "aliases: x86" in text.out


def test_profiles_lists_default_and_ci(edgekd):
    run = edgekd("profiles", "--json")
    assert {row["name"] for row in json.loads(run.out)} >= {"default", "ci"}
    shown = edgekd("profiles", "show", "default", "--json")
    assert json.loads(shown.out)["budgets"]["latency_p90_ms"] > 0


def test_user_target_dir_is_searched_first(edgekd, tmp_path):
    shipped = (ROOT / "targets" / "x86-avx2.toml").read_text()
    write(tmp_path / "mine" / "my-box.toml", shipped.replace('aliases = ["x86"]', "aliases = []"))
    run = edgekd("targets", "show", "my-box", "--targets-dir", str(tmp_path / "mine"), "--json")
    assert run.code == 0 and json.loads(run.out)["file"] == str(tmp_path / "mine" / "my-box.toml")


def test_dry_run_prints_the_plan_and_runs_nothing(edgekd, tmp_path, cache_dir):
    before = sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []
    run = edgekd("build", "--target", "x86", "--dry-run", "--json", out_dir=tmp_path / "out")
    assert run.code == 0, run.err
    plan = json.loads(run.out)
    assert [s["stage"] for s in plan["plan"]] == ["search", "teacher", "assistants", "distill", "export", "quantize", "check", "compile", "evaluate", "bench"]
    assert plan["project"]["name"] == "digits" and plan["target"]["name"].startswith("x86-")
    assert plan["profile"]["budgets"]["latency_p90_ms"] is not None
    assert not (tmp_path / "out").exists()
    assert (sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []) == before
    text = edgekd("build", "--dry-run", "--profile", "ci")
    assert "nothing was run" in text.out and re.search(r"checks [a-z_, ]*latency_p90_ms", text.out)


def test_unknown_target_suggests_the_nearest(edgekd):
    run = edgekd("build", "--target", "x86-avx3", "--dry-run")
    assert run.code == 2
    line = _one_line_error(run)
    assert "unknown target 'x86-avx3'" in line and "did you mean" in line and "x86-avx2" in line


def test_unknown_profile_suggests_the_nearest(edgekd):
    run = edgekd("build", "--profile", "defualt", "--dry-run")
    assert run.code == 2 and "did you mean default" in _one_line_error(run)


def test_bad_key_in_project_names_file_and_key(edgekd, tmp_path):
    project = write(tmp_path / "edgekd.toml", (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
                    .replace("temperature = 4.0", "temperature = 4.0\ntemprature = 2.0"))
    run = edgekd("build", "--project", str(project), "--dry-run")
    assert run.code == 2
    line = _one_line_error(run)
    assert str(project) in line and "distill.temprature" in line and "unknown key" in line


def test_bad_value_in_profile_names_file_and_key(edgekd, tmp_path):
    profile = write(tmp_path / "p.toml", "[budgets]\nlatency_p90_ms = -1\n")
    run = edgekd("build", "--profile", str(profile), "--dry-run")
    assert run.code == 2 and "budgets.latency_p90_ms" in _one_line_error(run)


def test_factory_that_does_not_exist(edgekd, tmp_path):
    project = write(tmp_path / "p.toml", (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
                    .replace("edgekd.examples.digits:student", "edgekd.examples.digits:no_such_student"))
    run = edgekd("build", "--project", str(project), "--dry-run")
    assert run.code == 2 and "student.factory" in _one_line_error(run)


def test_data_factory_returning_garbage_is_a_user_error(edgekd, tmp_path):
    project = write(tmp_path / "p.toml", (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
                    .replace("edgekd.examples.digits:load", "badfactories:not_splits"))
    run = edgekd("build", "--project", str(project), "--profile", "ci", out_dir=tmp_path / "out")
    assert run.code == 2 and "badfactories:not_splits" in _one_line_error(run)


def test_bad_teacher_checkpoint_loses_nothing(edgekd, tmp_path, cache_dir):
    write(tmp_path / "teacher.safetensors", "this is not a safetensors file")
    text = (ROOT / "edgekd" / "examples" / "digits.toml").read_text()
    text = text.replace("[teacher.train]\nepochs = 15\nlr = 0.002\nbatch_size = 64\nseed = 0\n", "")
    text = text.replace('args = { width = 32 }', 'args = { width = 32 }\ncheckpoint = "teacher.safetensors"', 1)
    project = write(tmp_path / "edgekd.toml", text)
    run = edgekd("build", "--project", str(project), "--profile", "ci", out_dir=tmp_path / "out")
    assert run.code == 2
    assert "teacher.safetensors" in _one_line_error(run) and "cannot load the teacher weights" in run.err
    assert not list((tmp_path / "out").glob("*.safetensors"))
    assert not list((cache_dir / ".staging").glob("teacher*"))


def test_missing_toolchain_exits_3(edgekd, tmp_path):
    target = (ROOT / "targets" / "x86-avx2.toml").read_text().replace('onnxruntime = "1.20"', 'onnxruntime = "999.0"')
    path = write(tmp_path / "future.toml", target)
    run = edgekd("build", "--target", str(path), "--profile", "ci", out_dir=tmp_path / "out")
    assert run.code == 3 and "onnxruntime >= 999.0" in _one_line_error(run)


def test_a_bug_exits_70_with_traceback(edgekd, monkeypatch):
    """A bug is an exception raised in edgekd's own code: simulated by a function whose code object
    says it lives in edgekd's package (one defined here would be the user's code: exit 2)."""
    from edgekd import api
    from edgekd.common.blame import PACKAGE_DIR

    scope: dict = {}
    exec(compile("def broken(*_, **__):\n    raise RuntimeError('simulated bug')\n", str(PACKAGE_DIR / "api.py"), "exec"), scope)
    monkeypatch.setattr(api, "build", scope["broken"])
    run = edgekd("build", "--profile", "ci")
    assert run.code == 70 and "Traceback" in run.err and "simulated bug" in run.err


def test_usage_error_exits_2(edgekd):
    assert edgekd("build", "--no-such-flag").code == 2


def test_console_script_is_installed():
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli.main", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "edgekd" in proc.stdout


@pytest.mark.slow
def test_wheel_ships_targets_and_profiles(tmp_path):
    """A non-editable install finds the shipped files (they live at the repo top level)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)], check=True)
    wheel = next((tmp_path / "dist").glob("edgekd-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekd/_data/targets/x86-avx2.toml" in names and "edgekd/_data/profiles/ci.toml" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = "from edgekd import api; from edgekd.config import ConfigSearch; print(sorted(r['name'] for r in api.list_configs('targets', ConfigSearch())))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "x86-avx2" in proc.stdout and str(tmp_path / "site") in subprocess.run(
        [sys.executable, "-c", "import edgekd.config.loading as l; print(l.builtin_dir('targets'))"],
        capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")}).stdout
