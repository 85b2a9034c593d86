"""File modes: what edgekd writes gets the mode a plain open() or mkdir() would give it under the
process umask (0644 / 0755 under umask 022), also where it is made through mkstemp or mkdtemp (0600 /
0700) and renamed into place: build folders are uploaded by CI and read by teammates."""
from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def umask() -> int:
    """The process umask, read once: from /proc/self/status where Linux gives it (reading it with
    os.umask means setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def default_mode(folder: bool = False) -> int:
    """The mode open() (0666) or mkdir() (0777) gives under the process umask."""
    return (0o777 if folder else 0o666) & ~umask()
