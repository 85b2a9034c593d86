"""What killed or failed builds leave in the stage cache: a dead build's staging folders and temp
files are removed when a cache is opened, a live one's are kept, and a full disk leaves nothing."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import small_tmpfs

from edgekd.common.fsutil import atomic_write_bytes
from edgekd.pipeline.cache import MANIFEST, StageCache

HOLD = """
import sys, time
from pathlib import Path
from edgekd.pipeline.cache import StageCache
from edgekd.common.fsutil import temp_file_beside
cache = StageCache(Path(sys.argv[1]))
temp_file_beside(cache.root / "teacher-logits" / "teacher-logits-k.npy")
with cache.staging("distill", "k") as scratch:
    (scratch / "student.safetensors").write_bytes(b"half")
    print(scratch, flush=True)
    time.sleep(60)
"""


def everything(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or not any(p.iterdir()))


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A build process in the middle of a stage (a staging folder and a teacher-cache temp file)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "cache")], stdout=subprocess.PIPE, text=True)
    scratch = Path(proc.stdout.readline().strip())  # type: ignore[union-attr]
    yield proc, scratch
    proc.kill()
    proc.wait()


def test_live_build_keeps_its_staging(tmp_path: Path, holder: tuple[subprocess.Popen[str], Path]) -> None:
    _, scratch = holder
    StageCache(tmp_path / "cache")  # a second build opens the cache meanwhile
    assert (scratch / "student.safetensors").read_bytes() == b"half"
    assert len(list((tmp_path / "cache" / "teacher-logits").iterdir())) == 1


def test_killed_build_leftovers_are_removed(tmp_path: Path, holder: tuple[subprocess.Popen[str], Path]) -> None:
    proc, scratch = holder
    proc.kill()  # SIGKILL: no finally runs
    proc.wait()
    assert scratch.is_dir()
    StageCache(tmp_path / "cache")  # the next build opens the cache
    assert not scratch.exists()
    assert everything(tmp_path / "cache") == [".staging", "teacher-logits"]  # empty folders only


def test_committed_entries_are_never_swept(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    with cache.staging("export", "k") as scratch:
        (scratch / MANIFEST).write_text(json.dumps({"ok": 1}))
    StageCache(tmp_path / "cache")
    assert cache.lookup("export", "k") == {"ok": 1}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.ENAMETOOLONG])
def test_os_error_while_staging_leaves_nothing(tmp_path: Path, code: int) -> None:
    cache = StageCache(tmp_path / "cache")
    with pytest.raises(OSError) as raised:
        with cache.staging("export", "k") as scratch:
            (scratch / "student.onnx").write_bytes(b"partial")
            raise OSError(code, "simulated", str(scratch / "student.onnx"))
    assert raised.value.errno == code
    assert cache.lookup("export", "k") is None
    assert everything(tmp_path / "cache") == [".staging"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root and permission to mount: skipped otherwise)."""
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


def test_full_disk_leaves_the_cache_clean(small_disk: Path) -> None:
    cache = StageCache(small_disk / "cache")
    with pytest.raises(OSError) as raised:
        with cache.staging("distill", "k") as scratch:
            (scratch / MANIFEST).write_text("{}")
            (scratch / "student.safetensors").write_bytes(b"\0" * (4 << 20))
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(OSError):
        atomic_write_bytes(small_disk / "cache" / "teacher-logits" / "teacher-logits-k.npy", b"\0" * (4 << 20))
    assert cache.lookup("distill", "k") is None
    assert everything(small_disk / "cache") == [".staging", "teacher-logits"]
    with cache.staging("distill", "k") as scratch:  # the space is free again
        np.save(scratch / "small.npy", np.zeros(10))
        (scratch / MANIFEST).write_text("{}")
    assert cache.lookup("distill", "k") == {}
