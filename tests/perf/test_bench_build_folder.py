"""`edgekd bench BUILD_DIR` (here and --device) measures only a finished, consistent build folder
(exit 2, one line naming the file, the folder untouched), and keeps it consistent: the report it
rewrites records bench.json's new hash, so the gate still trusts the folder after it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from build_folders import DAMAGE, assert_refused, damaged_copy, snapshot

from edgekd.pipeline.build_folder import verify

FAST = ("--profile", "ci", "--scenario", "SingleStream")


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_bench_refuses_a_folder_that_does_not_match_its_report(edgekd, cold_build, tmp_path: Path, damage: str) -> None:
    folder = damaged_copy(cold_build.out_dir, tmp_path / "build", damage)
    before = snapshot(folder)
    run = edgekd("bench", str(folder), *FAST)
    assert_refused(run.code, run.err, folder, damage)
    assert snapshot(folder) == before


@pytest.mark.parametrize("damage", ["killed build", "engine folder gone"])
def test_bench_on_a_device_refuses_before_running_anything(edgekd, cold_build, tmp_path: Path, damage: str) -> None:
    folder = damaged_copy(cold_build.out_dir, tmp_path / "build", damage)
    run = edgekd("bench", str(folder), "--device", f"local://{tmp_path / 'device'}", "--runs", "10")
    assert_refused(run.code, run.err, folder, damage)
    assert not (tmp_path / "device").exists() and not (folder / "device_result.json").exists()


def test_bench_keeps_the_folder_consistent(edgekd, cold_build, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(cold_build.out_dir, tmp_path / "build"))
    run = edgekd("bench", str(folder), *FAST)
    assert run.code == 0, run.err
    report = verify(folder)  # bench.json changed, and the report says so
    assert report["stages"][-1]["artefacts"]["bench.json"]["bytes"] == (folder / "bench.json").stat().st_size
    assert json.loads((folder / "bench.json").read_text())["p90_ms"] == report["latency"]["p90_ms"]
    gate = edgekd("gate", str(folder), "--baseline", str(cold_build.out_dir))
    # the gate trusts the folder: it compares (0 pass, 1 a measured regression: latency is timing noise
    # between two runs on a shared host), it does not refuse it as damaged (2)
    assert gate.code in (0, 1), gate.err
    assert gate.code == 0 or gate.err.startswith("edgekd: error: gate failed:"), gate.err


def test_bench_of_a_model_file_needs_no_build_folder(edgekd, cold_build, tmp_path: Path) -> None:
    model = Path(shutil.copy(cold_build.out_dir / "student_int8.onnx", tmp_path / "model.onnx"))
    run = edgekd("bench", str(model), "--target", "x86", *FAST, "--json")
    assert run.code == 0, run.err
    assert json.loads(run.out)["method"] == "measured"
