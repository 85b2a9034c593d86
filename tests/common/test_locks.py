"""edgekd.common.locks.exclusive: one holder at a time, a waiter names the holder, a dead holder
releases the lock, a timeout is a user error."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekd.common.locks import LockTimeout, exclusive, is_held, read_holder

HOLD = """
import sys, time
from edgekd.common.locks import exclusive
with exclusive(__import__("pathlib").Path(sys.argv[1]), "test lock", print):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the lock on `path` for `seconds` (returns once it holds it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_the_holder_is_recorded_while_held_and_cleared_after(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / ".lock"
    with exclusive(lock, "test lock", print) as me:
        assert read_holder(lock) == me and me["pid"] == os.getpid() and is_held(lock)  # by this process: flock is per open file
    assert lock.exists() and read_holder(lock) is None


def test_a_waiter_names_the_holder_and_gets_the_lock_when_it_ends(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    proc = hold(lock, 1.5)
    assert is_held(lock) and read_holder(lock)["pid"] == proc.pid
    lines: list[str] = []
    started = time.monotonic()
    with exclusive(lock, "test lock", lines.append):
        waited = time.monotonic() - started
    proc.wait()
    assert waited > 0.5 and len(lines) == 1
    assert lines[0].startswith(f"waiting for test lock: {lock} is held by pid {proc.pid} on host ")


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    proc = hold(lock, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not is_held(lock)
    with exclusive(lock, "test lock", pytest.fail, timeout=5):  # no wait, no line
        pass


def test_timeout_names_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    proc = hold(lock, 30)
    try:
        with pytest.raises(LockTimeout) as info, exclusive(lock, "test lock", lambda line: None, timeout=0.3):
            pytest.fail("got a lock another process holds")
        assert info.value.exit_code == 2 and f"still held by pid {proc.pid}" in str(info.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_file_that_cannot_be_made_is_a_user_error(tmp_path: Path) -> None:
    from edgekd.common.locks import LockError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LockError, match="file/.lock: cannot create the lock file") as info, exclusive(tmp_path / "file" / ".lock", "t", print):
        pass
    assert info.value.exit_code == 2
