"""A build folder is complete and consistent or visibly incomplete (edgekd.pipeline.build_folder):
the marker while a build writes, verification of every artefact's sha256, the report's own files."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekd.common.fsutil import sha256_file
from edgekd.pipeline import build_folder
from edgekd.pipeline.build_folder import (
    LOCK_FILE,
    MARKER,
    REPORT_DOCUMENTS,
    BuildFolderError,
)


def make_folder(root: Path, files: dict[str, bytes] | None = None) -> Path:
    """A minimal finished build folder: `files` written and listed as the one stage's artefacts."""
    files = {"student.onnx": b"onnx bytes", "engine/engine.onnx": b"engine bytes"} if files is None else files
    artefacts = {}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        artefacts[name] = {"file": name, "sha256": sha256_file(root / name), "bytes": len(data)}
    report = {"schema_version": 1, "stages": [{"name": "compile", "artefacts": artefacts}, {"name": "bench", "artefacts": {}}]}
    (root / "report.json").write_text(json.dumps(report))
    return root


def refusal(folder: Path) -> str:
    with pytest.raises(BuildFolderError) as info:
        build_folder.verify(folder)
    assert info.value.exit_code == 2 and "\n" not in info.value.one_line()
    return str(info.value)


def test_a_finished_folder_verifies(tmp_path: Path) -> None:
    assert build_folder.verify(make_folder(tmp_path))["schema_version"] == 1


@pytest.mark.parametrize("damage, named", [
    (lambda f: (f / "engine" / "engine.onnx").unlink(), "engine/engine.onnx: missing"),
    (lambda f: (f / "student.onnx").write_bytes(b"onnx bytez"), "student.onnx: does not match"),  # same size, other bytes
    (lambda f: (f / "student.onnx").write_bytes(b"longer onnx bytes"), "student.onnx: does not match"),
    (lambda f: (f / "report.json").unlink(), "is not a build folder: no report.json"),
    (lambda f: (f / "report.json").write_text("{garbage"), "report.json: not readable JSON"),
    (lambda f: (f / "report.json").write_text("[1, 2]"), "report.json: not an edgekd build report"),
    (lambda f: (f / "report.json").write_text('{"schema_version": 1, "stages": 3}'), "no 'stages' list"),
    (lambda f: (f / "report.json").write_text('{"schema_version": 1, "stages": [{"artefacts": {"x": {"file": "../x", "sha256": "0"}}}]}'),
     "points outside the build folder"),
])
def test_a_folder_that_does_not_match_its_report_is_refused(tmp_path: Path, damage, named: str) -> None:
    folder = make_folder(tmp_path)
    damage(folder)
    assert named in refusal(folder)


def test_the_marker_says_who_and_whether_it_still_runs(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / MARKER).write_text(json.dumps({"pid": 4242, "host": "ci-7", "started_at": "2026-01-01T00:00:00+00:00",
                                             "command": ["edgekd", "build"]}))
    text = refusal(folder)
    assert f"build incomplete: {folder / MARKER} present (a build started at 2026-01-01T00:00:00+00:00 by pid 4242 on host ci-7 " \
           "did not finish; its command: edgekd build)" in text


def test_writing_marks_the_folder_and_clears_the_old_report_until_the_block_ends(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    for name in REPORT_DOCUMENTS[1:]:
        (folder / name).write_text("old view")
    lines: list[str] = []
    with build_folder.writing(folder, lines.append):
        assert not any((folder / name).exists() for name in REPORT_DOCUMENTS)
        marker = json.loads((folder / MARKER).read_text())
        assert marker["pid"] == os.getpid() and marker["started_at"]
        assert "is still running" in refusal(folder)
        make_folder(folder)  # the build writes its report last
    assert not (folder / MARKER).exists() and build_folder.verify(folder) and lines == []
    assert (folder / LOCK_FILE).exists()


def test_a_build_that_raises_leaves_the_marker_and_no_report(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    with pytest.raises(RuntimeError), build_folder.writing(folder, print):
        raise RuntimeError("a stage failed")
    assert (folder / MARKER).exists() and not (folder / "report.json").exists()
    assert "did not finish" in refusal(folder)
    with build_folder.writing(folder, print):  # the next build clears it
        make_folder(folder)
    build_folder.verify(folder)


def test_updating_verifies_first_and_record_file_keeps_the_hash_true(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    with build_folder.updating(folder, print) as report:
        (folder / "bench.json").write_text('{"p90_ms": 1.0}')
        build_folder.record_file(report, "bench", folder, "bench.json")
        (folder / "report.json").write_text(json.dumps(report))
    assert "bench.json" in build_folder.verify(folder)["stages"][1]["artefacts"]
    (folder / "student.onnx").write_bytes(b"changed")
    with pytest.raises(BuildFolderError, match="student.onnx: does not match"), build_folder.updating(folder, print):
        pytest.fail("the block must not run on a folder that does not match its report")
    assert not (folder / MARKER).exists()


def test_a_report_alone_is_accepted_only_where_asked(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "report.json").write_text((folder / "report.json").read_text())
    report = json.loads((alone / "report.json").read_text())
    build_folder.check_artefacts(alone, report, alone_ok=True)  # a baseline kept as a single file
    with pytest.raises(BuildFolderError, match="missing"):
        build_folder.check_artefacts(alone, report)
    (alone / "student.onnx").write_bytes(b"other")  # one file beside it: then every file must match
    with pytest.raises(BuildFolderError, match="alone/engine/engine.onnx: missing"):
        build_folder.check_artefacts(alone, report, alone_ok=True)


def test_write_all_writes_exactly_the_report_documents(tmp_path: Path) -> None:
    from report.report_dicts import report  # tests/report/report_dicts.py

    from edgekd.report.outputs import write_all

    write_all(tmp_path, report(latency="estimated"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(REPORT_DOCUMENTS)
