"""Whose fault an exception is: the user's code (a factory, a model's forward, a data set), the user's
paths (permissions, read-only, names too long, disk full), or edgekd's own (a bug, exit 70).

The first two become user errors (exit 2): one line naming what raised, and the user's own
traceback frames kept for `--verbose`."""
from __future__ import annotations

import errno
import os
import sys
import sysconfig
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekd.errors import EdgekdError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
_LIBRARY_DIRS = tuple({str(Path(p).resolve()) for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                                                         sysconfig.get_paths()["platlib"]) if p})
# errors of the file system a user points edgekd at, not of edgekd
PATH_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "not permitted", errno.EROFS: "read-only file system",
               errno.ENAMETOOLONG: "file name too long", errno.ENOSPC: "no space left on device",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a part of the path is not a folder",
               errno.EISDIR: "is a folder, not a file", errno.ELOOP: "too many symbolic links"}


class UserCodeError(EdgekdError):
    """Code the project names (a factory, a model, a data set) raised; `frames` are its own frames
    of the traceback (shown under --verbose)."""

    def __init__(self, message: str, hint: str | None, frames: list[str]) -> None:
        super().__init__(message, hint)
        self.frames = frames


def _is_users(filename: str) -> bool:
    path = str(Path(filename).resolve()) if not filename.startswith("<") else filename
    if path.startswith("<"):
        return False
    return not path.startswith(str(PACKAGE_DIR) + os.sep) and not path.startswith(_LIBRARY_DIRS)


def user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of `exc`'s traceback that lie in the user's code: outside edgekd's package, the
    standard library and installed packages."""
    return [f for f in traceback.extract_tb(exc.__traceback__) if _is_users(f.filename)]


def _where(frames: list[traceback.FrameSummary]) -> str:
    last = frames[-1]
    return f"{last.filename}:{last.lineno} in {last.name}"


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text[:500]}"


def from_user_code(exc: BaseException, what: str) -> UserCodeError:
    """`exc`, raised by the user's `what` (e.g. "project.toml: key 'teacher.factory' = 'pkg:fn'"), as a user error."""
    frames = user_frames(exc)
    at = f" (at {_where(frames)})" if frames else ""
    return UserCodeError(f"{what} raised {_message(exc)}{at}", "fix that code; --verbose shows its traceback",
                         traceback.format_list(frames or traceback.extract_tb(exc.__traceback__)[-3:]))


@contextmanager
def user_code(what: str) -> Iterator[None]:
    """Run the block as the user's code: an exception it raises (not an EdgekdError, not an interrupt)
    becomes a UserCodeError naming `what`."""
    try:
        yield
    except EdgekdError:
        raise
    except Exception as exc:
        raise from_user_code(exc, what) from exc


def from_os_error(exc: OSError) -> EdgekdError | None:
    """An OSError about a path the user gave (permissions, read-only, too long, disk full) as a
    user error naming the path; None for anything else."""
    why = PATH_ERRNOS.get(exc.errno or -1)
    if why is None:
        return None
    path = exc.filename if exc.filename is not None else "a file"
    hint = ("free space on that file system, or point --out / --cache-dir ($EDGEKD_CACHE_DIR) elsewhere"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "use a path you can write to (--out, --cache-dir or $EDGEKD_CACHE_DIR)")
    detail = exc.strerror or str(exc)
    return EdgekdError(f"cannot use {path}: {why}" + ("" if detail.lower() == why else f" ({detail})"), hint)


def blame(exc: BaseException) -> EdgekdError | None:
    """`exc` as a user error when the user's code or paths caused it; None when it is edgekd's bug."""
    for link in _chain(exc):
        if isinstance(link, OSError) and (mapped := from_os_error(link)) is not None:
            return mapped
    if user_frames(exc):
        return from_user_code(exc, "your code")
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def print_frames(exc: BaseException) -> None:
    """The user's own frames of `exc` (a UserCodeError's, or any exception's), for --verbose."""
    frames = exc.frames if isinstance(exc, UserCodeError) else traceback.format_list(user_frames(exc))
    if frames:
        sys.stderr.write("Traceback of your code (most recent call last):\n" + "".join(frames))
