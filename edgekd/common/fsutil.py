"""Atomic file writes and content hashes: an interrupted build never leaves a half-written file.
Files written here get the mode a plain open() would give them (edgekd.common.modes), not mkstemp's 0600."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from edgekd.common.modes import default_mode
from edgekd.common.tempdirs import owner_tag, temp_dir


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_file_beside(path: Path) -> Path:
    """An empty temp file in `path`'s folder (created if missing), named after `path` and this
    process (edgekd.common.tempdirs: a killed process's leftovers are swept), with default_mode()."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{owner_tag()}", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
    finally:
        os.close(fd)
    return Path(tmp)


@contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: a temp file in the same folder, renamed onto `path`
    when the block ends without an error (removed when it raises), so `path` is old or whole."""
    tmp = temp_file_beside(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    with atomic_writer(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` so that `dst` is either the old file or the whole new one."""
    tmp = temp_file_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def scratch_cwd() -> Iterator[Path]:
    """Run the block in a temporary working folder, removed after: for library code that writes
    debug files into the current folder (onnxruntime's symbolic shape inference saves
    sym_shape_infer_temp.onnx there when it gives up)."""
    before = os.getcwd()
    with temp_dir("cwd") as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(before)
