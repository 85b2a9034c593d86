"""`edgekd gate` trusts only a finished, consistent build folder: a folder a build did not finish, or
whose files differ from its report.json, is refused (exit 2, one line naming the file), as
CANDIDATE or BASELINE, given as the folder or as its report.json; a report alone is still read."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from build_folders import DAMAGE, assert_refused, damaged_copy, snapshot


@pytest.mark.parametrize("damage", [d for d in DAMAGE if d not in ("report garbage", "report not a table", "report gone")])
@pytest.mark.parametrize("role", ["candidate", "baseline"])
def test_gate_refuses_a_folder_that_does_not_match_its_report(edgekd, cold_build, tmp_path: Path, damage: str, role: str) -> None:
    folder = damaged_copy(cold_build.out_dir, tmp_path / "build", damage)
    before = snapshot(folder)
    args = [str(folder), "--baseline", str(cold_build.out_dir)] if role == "candidate" else [str(cold_build.out_dir), "--baseline", str(folder)]
    run = edgekd("gate", *args)
    assert_refused(run.code, run.err, folder, damage)
    assert run.err.startswith(f"edgekd: error: {role} ")
    assert snapshot(folder) == before  # the gate wrote nothing


@pytest.mark.parametrize("damage", ["killed build", "weights changed"])
def test_gate_checks_a_report_json_against_the_folder_it_sits_in(edgekd, cold_build, tmp_path: Path, damage: str) -> None:
    folder = damaged_copy(cold_build.out_dir, tmp_path / "build", damage)
    run = edgekd("gate", str(folder / "report.json"), "--baseline", str(cold_build.out_dir))
    assert_refused(run.code, run.err, folder, damage)


def test_a_report_kept_alone_is_still_a_baseline(edgekd, cold_build, tmp_path: Path) -> None:
    alone = tmp_path / "baseline" / "report.json"
    alone.parent.mkdir()
    shutil.copy(cold_build.out_dir / "report.json", alone)
    run = edgekd("gate", str(cold_build.out_dir), "--baseline", str(alone))
    assert run.code == 0, run.err
