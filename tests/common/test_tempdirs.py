"""edgekd/common/tempdirs.py: temporary names carry their owner; a dead owner's are swept, a live one's kept."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.common import tempdirs
from edgekd.common.tempdirs import is_stale, machine, make_temp_dir, owner_tag, start_time, sweep, temp_dir


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owner_tag_names_this_process() -> None:
    assert owner_tag() == f".p{os.getpid()}s{start_time(os.getpid())}h{machine()}."
    assert start_time(os.getpid()) > 0


def test_temp_dir_is_tagged_and_removed(tmp_path: Path) -> None:
    with temp_dir("probe", tmp_path) as made:
        assert made.is_dir() and made.name.startswith(f"edgekd-probe{owner_tag()}")
        (made / "x").write_text("x")
        assert not is_stale(made)
    assert not made.exists()


def test_sweep_removes_dead_owners_and_keeps_live_ones(tmp_path: Path) -> None:
    dead = tmp_path / f"build.p{dead_pid()}s1h{machine()}.abc"
    dead.mkdir()
    (dead / "weights.bin").write_bytes(b"x")
    dead_file = tmp_path / f".out.json.p{dead_pid()}s1h{machine()}.x.tmp"
    dead_file.write_bytes(b"half")
    live = make_temp_dir("live", tmp_path)
    parent = tmp_path / f"parent.p{os.getppid()}s{start_time(os.getppid())}h{machine()}.x"  # a live process, not us
    parent.mkdir()
    untagged = tmp_path / "entry"
    untagged.mkdir()
    assert sorted(sweep(tmp_path)) == sorted([dead, dead_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, parent.name, "entry"])


def test_reused_pid_is_dead(tmp_path: Path) -> None:
    """Our pid with another start time: a process that had our pid before us."""
    reused = tmp_path / f"s.p{os.getpid()}s{start_time(os.getpid()) + 7}h{machine()}.x"
    reused.mkdir()
    assert sweep(tmp_path) == [reused]


def test_foreign_or_untagged_entries_go_only_when_old(tmp_path: Path) -> None:
    other_machine = tmp_path / f"s.p{dead_pid()}s1h{'0' * 8 if machine() != '0' * 8 else '1' * 8}.x"
    other_machine.mkdir()
    untagged = tmp_path / "export-0123abcd"
    untagged.mkdir()
    assert sweep(tmp_path) == []
    old = time.time() - 2 * tempdirs.DAY_S
    os.utime(untagged, (old, old))
    assert sweep(tmp_path) == [untagged]
    assert sweep(tmp_path, max_age_s=None) == []


def test_sweep_of_missing_folder_is_nothing(tmp_path: Path) -> None:
    assert sweep(tmp_path / "absent") == []


def test_sweep_temp_dirs_only_edgekd_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempdirs.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(tempdirs, "_swept_temp", False)
    mine = tmp_path / f"edgekd-cwd.p{dead_pid()}s1h{machine()}.abc"
    other = tmp_path / f"other.p{dead_pid()}s1h{machine()}.abc"
    mine.mkdir()
    other.mkdir()
    assert tempdirs.sweep_temp_dirs() == [mine]
    assert tempdirs.sweep_temp_dirs() == []  # once per process
    assert other.exists()


def test_killed_process_leftover_is_swept(tmp_path: Path) -> None:
    """A real process makes a temp folder and is killed with SIGKILL: the folder is then swept."""
    code = ("import sys, time; from pathlib import Path; from edgekd.common.tempdirs import make_temp_dir; "
            "print(make_temp_dir('killed', Path(sys.argv[1])), flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    made = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
    assert made.is_dir() and sweep(tmp_path) == []  # alive: kept
    proc.kill()
    proc.wait()
    assert sweep(tmp_path) == [made]
    assert not made.exists()
