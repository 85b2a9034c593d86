"""Builds of the built-in example as separate processes (`python -m edgekd.cli.main build`, ci
profile, on a given stage cache), for the tests that kill builds or run two at once."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from edgekd.examples import __file__ as EXAMPLES

DIGITS = Path(EXAMPLES).with_name("digits.toml")


def project(folder: Path, width: int) -> Path:
    """The built-in example with the student `width` wide (8 in the example itself)."""
    text = DIGITS.read_text()
    assert "args = { width = 8 }" in text
    path = folder / f"digits-width{width}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("args = { width = 8 }", f"args = {{ width = {width} }}"))
    return path


def start(project_file: Path, out: Path, cache: Path) -> subprocess.Popen[str]:
    """`edgekd build --target x86 --profile ci --project PROJECT --out OUT` with EDGEKD_CACHE_DIR=cache,
    stdout and stderr together, unbuffered (lines arrive as the build logs them)."""
    env = {**os.environ, "EDGEKD_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "edgekd.cli.main", "build", "--target", "x86", "--profile", "ci",
            "--project", str(project_file), "--out", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=out.parent)


def run(project_file: Path, out: Path, cache: Path) -> tuple[int, str]:
    proc = start(project_file, out, cache)
    output, _ = proc.communicate(timeout=600)
    return proc.returncode, output


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until `path` exists (the build that `proc` runs put it there); fails if the build ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the build ended (exit {proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)
