"""Advisory file locks (fcntl.flock, Linux/macOS): one process at a time in a folder that several
may write (a build's --out, the stage cache). The lock file holds who has it (pid, host, start time,
command) so that a waiting process can say what it waits for. The kernel releases a lock when its
holder exits, kill -9 included, so a dead holder never blocks anyone; the lock file itself stays (it
is never removed: removing it would let two processes lock two different files of the same name)."""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

POLL_S = 0.2  # how often a waiter with a timeout tries again


class LockError(EdgekdError):
    """A lock file that cannot be created or locked (exit 2, naming it)."""


class LockTimeout(LockError):
    """Another process held the lock for longer than the caller would wait (exit 2)."""


def holder_info() -> dict[str, Any]:
    """Who this process is, as a lock file or a marker records it."""
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": sys.argv}


def describe_holder(info: dict[str, Any] | None) -> str:
    """e.g. `pid 123 on host ci-7, since 2026-01-01T00:00:00+00:00 (edgekd build --out x)`."""
    if not info:
        return "a process that has not said who it is yet"
    command = info.get("command")
    command = " ".join(str(c) for c in command) if isinstance(command, list) else command
    text = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, since {info.get('started_at', '?')}"
    return f"{text} ({command})" if command else text


def read_holder(path: Path) -> dict[str, Any] | None:
    """The holder recorded in lock file `path`; None when it is empty or unreadable."""
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # e.g. ENOLCK: a network filesystem without locks
        raise LockError(f"{path}: cannot lock it ({exc.strerror})", "use a folder on a local filesystem") from None
    return True


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock on `path` now (a dead holder's lock is released)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _wait(fd: int, path: Path, what: str, timeout: float | None) -> None:
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout
    while not _try_lock(fd, path):
        if time.monotonic() >= deadline:
            raise LockTimeout(f"{what} ({path}) is still held by {describe_holder(read_holder(path))} after {timeout:g} s",
                              "wait for that process to finish, or stop it")
        time.sleep(POLL_S)


@contextmanager
def exclusive(path: Path, what: str, log: Callable[[str], None], timeout: float | None = None) -> Iterator[dict[str, Any]]:
    """Hold an exclusive lock on file `path` (created if missing) for the block; yields this holder's
    record. When another process holds it, logs one line naming the holder and waits for it (at
    most `timeout` seconds, then LockTimeout; None: as long as it takes)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise LockError(f"{path}: cannot create the lock file for {what} ({exc.strerror})",
                        f"make {path.parent} writable, or choose another folder") from None
    try:
        if not _try_lock(fd, path):
            log(f"waiting for {what}: {path} is held by {describe_holder(read_holder(path))}")
            _wait(fd, path, what, timeout)
        me = holder_info()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)  # still held: nobody reads a finished holder as the current one
    finally:
        os.close(fd)  # releases the lock
