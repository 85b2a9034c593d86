"""Content-addressed stage store: `ROOT/<stage>/<key>/` holds a stage's output files and its
`stage.json` (metrics, notes). An entry appears by one directory rename, so it is whole or absent.

Staging folders (`ROOT/.staging/<stage>.<owner tag>.<hex>`) and the temp files of the teacher caches
carry their process's owner tag (edgekd.common.tempdirs): opening the cache removes those of dead
processes (a build killed with kill -9), and of edgekd's `/tmp/edgekd-*` folders, never a live one's."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgekd.common.artefacts import MANIFEST  # noqa: F401  (re-exported: the cache entry file)
from edgekd.common.fsutil import sha256_bytes
from edgekd.common.tempdirs import owner_tag, sweep, sweep_temp_dirs


def default_root() -> Path:
    if os.environ.get("EDGEKD_CACHE_DIR"):
        return Path(os.environ["EDGEKD_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekd"


def make_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything the stage's outputs depend on."""
    return sha256_bytes(json.dumps(parts, sort_keys=True, default=str).encode("utf-8"))


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sweep()

    def sweep(self) -> list[Path]:
        """Remove what dead processes left: staging folders, temp files and folders in the cache's
        own folders (`ROOT/<name>/`, e.g. the teacher caches), edgekd's folders in the system temp
        folder. Returns what was removed."""
        removed = sweep(self.root / ".staging")
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir() and p.name != ".staging"]
        except OSError:  # no cache yet, or unreadable: the build says so when it writes
            folders = []
        for folder in folders:
            removed += sweep(folder, max_age_s=None)
        return removed + sweep_temp_dirs()

    def entry(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, key: str) -> dict[str, Any] | None:
        """The manifest of a complete entry, or None."""
        manifest = self.entry(stage, key) / MANIFEST
        try:
            return json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    @contextmanager
    def staging(self, stage: str, key: str) -> Iterator[Path]:
        """A scratch folder for the stage; on normal exit it becomes the entry (the caller must
        have written the manifest), on error it is removed."""
        scratch = self.root / ".staging" / f"{stage}{owner_tag()}{uuid.uuid4().hex}"
        scratch.mkdir(parents=True)
        try:
            yield scratch
            if not (scratch / MANIFEST).is_file():
                raise RuntimeError(f"stage {stage} finished without writing its manifest")
            final = self.entry(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # an equal entry was committed meanwhile; keep that one
                shutil.rmtree(scratch)
            else:
                os.rename(scratch, final)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
