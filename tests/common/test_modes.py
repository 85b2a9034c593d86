"""edgekd/common/modes.py and the writes that use it: outputs get the process umask's mode, not mkstemp's 0600."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.common.modes import default_mode, umask


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_matches_os(monkeypatch: pytest.MonkeyPatch) -> None:
    current = os.umask(0o022)
    os.umask(current)
    assert umask() == current
    assert default_mode() == 0o666 & ~current and default_mode(folder=True) == 0o777 & ~current


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int, file_mode: int, dir_mode: int) -> None:
    """In a fresh process with `mask`: atomic writes and copies, and shared temp folders."""
    code = """
import sys
from pathlib import Path
from edgekd.common.fsutil import atomic_copy, atomic_write_text
from edgekd.common.tempdirs import make_temp_dir
out = Path(sys.argv[1])
atomic_write_text(out / "report.json", "{}")
atomic_copy(out / "report.json", out / "copy.json")
print(make_temp_dir("entry", out, shared=True))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True,
                          preexec_fn=lambda: os.umask(mask))
    assert mode(tmp_path / "report.json") == file_mode
    assert mode(tmp_path / "copy.json") == file_mode
    assert mode(Path(proc.stdout.strip())) == dir_mode
