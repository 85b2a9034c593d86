"""Temporary files and folders that say which process made them, so that what a killed process left
behind can be told from what a live one is still using, and removed.

Every temporary name edgekd makes (its `/tmp/edgekd-*` folders, the cache's staging folders, the
temp files of atomic writes and of the teacher caches) carries an owner tag `.p<pid>s<start>h<host>.`:
the process id, its start time (clock ticks after boot, from /proc/<pid>/stat: a reused pid has
another) and a short hash of the boot id, the pid namespace and the host name (pids mean nothing on
another boot, container or machine sharing the folder). `sweep(folder)` removes the entries whose
owner is dead; an entry made on another boot, container or host, or one with no tag (an older
edgekd's), is removed only once it is older than `max_age_s`, since its owner cannot be asked.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from edgekd.common.modes import default_mode

DAY_S = 24 * 3600.0
_TAG = re.compile(r"\.p(\d+)s(\d+)h([0-9a-f]{8})\.")


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def start_time(pid: int) -> int:
    """The process's start time in clock ticks after boot (/proc/<pid>/stat field 22); 0 when unknown."""
    stat = _read(f"/proc/{pid}/stat")
    fields = stat[stat.rfind(")") + 2:].split()  # the command name (field 2) may hold spaces and ')'
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0


@lru_cache(maxsize=1)
def machine() -> str:
    """8 hex digits naming this boot, pid namespace and host: where a pid in a tag means something."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    seed = "\0".join((_read("/proc/sys/kernel/random/boot_id").strip(), namespace, socket.gethostname()))
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:8]


def owner_tag() -> str:
    """`.p<pid>s<start>h<machine>.`: put it in every temporary name this process makes."""
    pid = os.getpid()
    return f".p{pid}s{_own_start(pid)}h{machine()}."


@lru_cache(maxsize=4)
def _own_start(pid: int) -> int:  # keyed by pid: a forked child asks again
    return start_time(pid)


def owner_alive(pid: int, start: int) -> bool:
    """Whether process `pid` (started at `start`, 0 if unknown) on this machine still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    now = start_time(pid)
    return start == 0 or now == 0 or now == start


def is_stale(entry: Path, max_age_s: float | None = DAY_S) -> bool:
    """Whether `entry` is a leftover: its tag names a dead process on this machine, or it cannot be
    asked (no tag, another machine) and is older than `max_age_s` (None: never)."""
    found = _TAG.search(entry.name)
    if found and found.group(3) == machine():
        return not owner_alive(int(found.group(1)), int(found.group(2)))
    if max_age_s is None:
        return False
    try:
        return time.time() - entry.lstat().st_mtime > max_age_s
    except OSError:
        return False


def remove(entry: Path) -> None:
    """Remove a file or folder; gone already (another sweeper) is fine."""
    try:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    except OSError:
        pass


def sweep(folder: Path, prefix: str = "", max_age_s: float | None = DAY_S) -> list[Path]:
    """Remove the leftovers among `folder`'s entries whose names start with `prefix`; the removed ones."""
    try:
        entries = [e for e in Path(folder).iterdir() if e.name.startswith(prefix)]
    except OSError:  # no such folder, or unreadable: nothing to sweep
        return []
    stale = [e for e in entries if is_stale(e, max_age_s)]
    for entry in stale:
        remove(entry)
    return stale


_swept_temp = False


def sweep_temp_dirs() -> list[Path]:
    """Once per process: remove the `edgekd-*` folders in the system temp folder whose owner is dead
    (untagged ones are left alone: they may be another tool's or a live older edgekd's)."""
    global _swept_temp
    if _swept_temp:
        return []
    _swept_temp = True
    return sweep(Path(tempfile.gettempdir()), "edgekd-", max_age_s=None)


def make_temp_dir(purpose: str, parent: Path | None = None, shared: bool = False) -> Path:
    """A new folder `edgekd-<purpose>.<owner tag>.<random>` in `parent` (default: the system temp
    folder), private (0700) unless `shared` (it is renamed into place as an output: the umask's
    mode); the caller removes it (or use temp_dir)."""
    path = Path(tempfile.mkdtemp(prefix=f"edgekd-{purpose}{owner_tag()}", dir=parent))
    if shared:
        path.chmod(default_mode(folder=True))
    return path


@contextmanager
def temp_dir(purpose: str, parent: Path | None = None) -> Iterator[Path]:
    """make_temp_dir for the block, removed after it whatever happens."""
    path = make_temp_dir(purpose, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
