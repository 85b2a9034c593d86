"""Content-addressed stage store: `ROOT/<stage>/<key>/` holds a stage's output files and its
`stage.json` (metrics, notes). An entry appears by one directory rename, so it is whole or absent."""
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
        scratch = self.root / ".staging" / f"{stage}-{uuid.uuid4().hex}"
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
