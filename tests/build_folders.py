"""Helpers for tests of build folders that must be refused (edgekd.pipeline.build_folder): damage a
copy of a real build, snapshot it, and check a refusal is one line, exit 2, naming the file."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from edgekd.common.fsutil import sha256_file
from edgekd.pipeline.build_folder import MARKER

KILLED = {"pid": 4242, "host": "ci-7", "started_at": "2026-01-01T00:00:00+00:00", "command": ["edgekd", "build"]}


def _killed_build(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps(KILLED))


def _append(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).open("ab").write(b"\0")


# damage -> (what it does to a build folder, the path the refusal must name, what it must say)
DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "killed build": (_killed_build, MARKER, "present (a build started at 2026-01-01T00:00:00+00:00 by pid 4242 on host ci-7 did not finish"),
    "engine folder gone": (lambda f: shutil.rmtree(f / "engine"), "engine/engine.onnx", "missing"),
    "weights changed": (_append("student.safetensors"), "student.safetensors", "does not match"),
    "int8 model changed": (_append("student_int8.onnx"), "student_int8.onnx", "does not match"),
    "engine.json garbage": (lambda f: (f / "engine.json").write_text("{garbage"), "engine.json", "does not match"),
    "report garbage": (lambda f: (f / "report.json").write_text("{garbage"), "report.json", "not readable JSON"),
    "report not a table": (lambda f: (f / "report.json").write_text("[]"), "report.json", "not an edgekd build report"),
    "report gone": (lambda f: (f / "report.json").unlink(), "", "no report.json"),
}


def damaged_copy(build: Path, dest: Path, damage: str) -> Path:
    folder = Path(shutil.copytree(build, dest))
    DAMAGE[damage][0](folder)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (the lock file aside) by relative path, with its sha256."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".edgekd.lock"}


def assert_refused(code: int, err: str, folder: Path, damage: str) -> None:
    """Exit 2, one line on stderr naming the damaged file and saying what is wrong, no traceback."""
    _, name, says = DAMAGE[damage]
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(folder / name).rstrip("/") in err and says in err, err
