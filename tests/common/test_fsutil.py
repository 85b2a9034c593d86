"""edgekd/common/fsutil.py: atomic writes never leave a half-written or temporary file."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from edgekd.common import fsutil
from edgekd.common.fsutil import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    sha256_bytes,
    sha256_file,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def fail_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fsutil.os, "replace", boom)


def test_write_creates_parents_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "out.json"
    atomic_write_text(path, "héllo")
    assert path.read_bytes() == "héllo".encode("utf-8")
    assert names(path.parent) == ["out.json"]


def test_write_replaces_existing_content(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old and longer")
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert names(tmp_path) == ["out.bin"]


def test_failed_replace_keeps_old_content_and_removes_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    fail_replace(monkeypatch)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert names(tmp_path) == ["report.json"]


def test_failed_write_of_new_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_replace(monkeypatch)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "new.bin", b"x")
    assert names(tmp_path) == []


def test_interrupt_during_write_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(fsutil.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert names(tmp_path) == ["model.onnx"]


def test_atomic_copy_copies_and_leaves_no_temp(tmp_path: Path) -> None:
    src = tmp_path / "src" / "engine.onnx"
    src.parent.mkdir()
    src.write_bytes(b"\x00\x01engine")
    dst = tmp_path / "out" / "engine.onnx"
    atomic_copy(src, dst)
    assert dst.read_bytes() == b"\x00\x01engine"
    assert names(dst.parent) == ["engine.onnx"]
    dst.write_bytes(b"stale")
    atomic_copy(src, dst)
    assert dst.read_bytes() == b"\x00\x01engine"


def test_atomic_copy_failure_keeps_old_dst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"new")
    dst.write_bytes(b"old")
    fail_replace(monkeypatch)
    with pytest.raises(OSError):
        atomic_copy(src, dst)
    assert dst.read_bytes() == b"old"
    assert names(tmp_path) == ["dst.bin", "src.bin"]


def test_atomic_copy_missing_source_leaves_no_temp(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_copy(tmp_path / "missing", tmp_path / "out" / "dst")
    assert names(tmp_path / "out") == []


def test_sha256_file_matches_hashlib_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(1000) * 2600  # > 2 MiB: several 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected == sha256_bytes(data)


def test_sha256_of_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
