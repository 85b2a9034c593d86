"""The teacher-generation cache: a local teacher's generations (edgekd.distill.generation) kept on
disk across builds, like the teacher-logit cache (edgekd.distill.logit_cache).

An entry is keyed by the teacher's content identity, the generation settings (real_fraction aside:
mixing real text in does not change the generations), the seed, the prompts' fingerprint (the data's
and, with a prompts file, its content hash), the entry format and the versions of the runtimes that
generate (torch, transformers, onnxruntime, numpy). It is two files in `cache_dir`:
`generations-KEY.json`, the provenance sidecar (teacher sha256 and description, settings, seed,
count, engine, edgekd version), written first, and `generations-KEY.npz` (sequences, lengths,
prompt_tokens), whose rename makes the entry: both are written through a temp file beside them and
renamed. An entry that cannot be read back (edited or truncated outside edgekd) is a miss and is
replaced.
"""
from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.fsutil import atomic_write_text, atomic_writer, sha256_bytes
from edgekd.common.toolchain import versions
from edgekd.common.version import __version__
from edgekd.config.generate import GenerateConfig
from edgekd.distill.generation import Generated
from edgekd.distill.teachers import TeacherSource
from edgekd.pipeline.cache import make_key

FORMAT = 1
RUNTIMES = ("torch", "transformers", "onnxruntime", "numpy")
NOT_IN_KEY = ("real_fraction",)


@dataclass(frozen=True)
class CachedGenerations:
    generated: Generated
    provenance: dict[str, Any]
    hit: bool
    path: Path


def teacher_sha256(identity: dict[str, Any]) -> str:
    """The teacher's one content hash: its weights' or file's sha256, else the hash of its identity."""
    for field in ("weights_sha256", "sha256"):
        if isinstance(identity.get(field), str):
            return identity[field]
    return sha256_bytes(json.dumps(identity, sort_keys=True).encode())


def settings_of(cfg: GenerateConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.model_dump().items() if k not in NOT_IN_KEY}


def cache_key(teacher: TeacherSource, cfg: GenerateConfig, prompts_sha256: str) -> str:
    return make_key({"teacher": teacher.identity(), "generate": settings_of(cfg), "prompts_sha256": prompts_sha256,
                     "format": FORMAT, "runtimes": versions(RUNTIMES)})


def entry_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    return Path(cache_dir) / f"generations-{key}.npz", Path(cache_dir) / f"generations-{key}.json"


def read_entry(npz: Path, sidecar: Path) -> tuple[Generated, dict[str, Any]] | None:
    """The entry, or None when either file is missing or unreadable."""
    try:
        provenance = json.loads(sidecar.read_text())
        with np.load(npz, allow_pickle=False) as data:
            sequences, lengths, prompt_tokens = data["sequences"], data["lengths"], int(data["prompt_tokens"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    if sequences.ndim != 2 or lengths.shape != (len(sequences),) or provenance.get("count") != len(sequences):
        return None
    return Generated(sequences.astype(np.int64), lengths.astype(np.int64), prompt_tokens, provenance.get("engine", "")), provenance


def provenance_of(teacher: TeacherSource, cfg: GenerateConfig, generated: Generated, prompts_sha256: str) -> dict[str, Any]:
    identity = teacher.identity()
    return {"teacher_sha256": teacher_sha256(identity), "teacher": teacher.describe(), "teacher_identity": identity,
            "settings": settings_of(cfg), "seed": cfg.seed, "count": generated.count,
            "prompts": generated.count // cfg.samples_per_prompt, "prompt_tokens": generated.prompt_tokens,
            "prompts_sha256": prompts_sha256, "engine": generated.engine, "edgekd_version": __version__,
            "runtimes": versions(RUNTIMES)}


def write_entry(npz: Path, sidecar: Path, generated: Generated, provenance: dict[str, Any]) -> None:
    """The sidecar, then the arrays: each through a temp file and a rename (the `.npz` makes the entry)."""
    atomic_write_text(sidecar, json.dumps(provenance, indent=1, sort_keys=True))
    with atomic_writer(npz) as fh:
        np.savez(fh, sequences=generated.sequences, lengths=generated.lengths, prompt_tokens=np.int64(generated.prompt_tokens))


def cached_generations(teacher: TeacherSource, cfg: GenerateConfig, prompts_sha256: str, cache_dir: Path,
                       make: Callable[[], Generated]) -> CachedGenerations:
    """The generations for (teacher, settings, prompts) from the cache, or made by `make()` and cached."""
    npz, sidecar = entry_paths(cache_dir, cache_key(teacher, cfg, prompts_sha256))
    found = read_entry(npz, sidecar) if npz.is_file() else None
    if found is not None:
        return CachedGenerations(found[0], found[1], True, npz)
    generated = make()
    provenance = provenance_of(teacher, cfg, generated, prompts_sha256)
    write_entry(npz, sidecar, generated, provenance)
    return CachedGenerations(generated, provenance, False, npz)
