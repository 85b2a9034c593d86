"""Two builds into one --out on one cache: the second waits for the first (the folder's lock),
saying which build it waits for; both succeed and the folder is a consistent build."""
from __future__ import annotations

from pathlib import Path

import pytest
from build_processes import project, start, wait_for

from edgekd.pipeline.build_folder import MARKER, verify

pytestmark = pytest.mark.slow


def test_two_builds_into_one_out_folder_take_turns(cold_build, cache_dir: Path, tmp_path: Path) -> None:
    assert cold_build.code == 0, cold_build.err
    width7 = project(tmp_path, 7)  # not in the cache yet: the first build holds the folder while it distills
    out = tmp_path / "out"
    out.mkdir()
    first = start(width7, out, cache_dir)
    wait_for(out / MARKER, first)  # the first build holds the folder's lock now
    second = start(width7, out, cache_dir)
    out_first, _ = first.communicate(timeout=600)
    out_second, _ = second.communicate(timeout=600)
    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second
    waited = [line for line in out_second.splitlines() if line.startswith("waiting for build folder")]
    assert len(waited) == 1 and f"is held by pid {first.pid} on host " in waited[0], out_second
    assert "waiting" not in out_first
    report = verify(out)
    assert all(s["status"] == "cached" for s in report["stages"])  # the second build found the first's work in the cache
