"""Finding and loading config files: search paths, names, aliases, errors that name file and key."""
from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from edgekd.common.fsutil import sha256_bytes
from edgekd.common.toolchain import cpu_flags
from edgekd.config.models import Profile, Project
from edgekd.config.target import Target
from edgekd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
BUILTIN_EXAMPLE = PACKAGE_DIR / "examples" / "digits.toml"
ENV_DIRS = {"targets": "EDGEKD_TARGETS_PATH", "profiles": "EDGEKD_PROFILES_PATH"}


@dataclass(frozen=True)
class Resolved(Generic[M]):
    """A loaded config with where it came from."""

    name: str
    path: Path
    config: M
    sha256: str
    via: str = "file"


def builtin_dir(kind: str) -> Path:
    """Shipped targets/profiles: inside the installed package, or the source checkout's top level."""
    installed = PACKAGE_DIR / "_data" / kind
    return installed if installed.is_dir() else PACKAGE_DIR.parent / kind


@dataclass(frozen=True)
class ConfigSearch:
    """Where targets and profiles are looked up, first match wins:
    the --targets-dir/--profiles-dir folders, then $EDGEKD_TARGETS_PATH/$EDGEKD_PROFILES_PATH
    (os.pathsep-separated), then the ones shipped with edgekd."""

    targets_dirs: tuple[Path, ...] = field(default_factory=tuple)
    profiles_dirs: tuple[Path, ...] = field(default_factory=tuple)

    def dirs(self, kind: str) -> list[Path]:
        given = self.targets_dirs if kind == "targets" else self.profiles_dirs
        env = [Path(p) for p in os.environ.get(ENV_DIRS[kind], "").split(os.pathsep) if p]
        return [*given, *env, builtin_dir(kind)]

    def files(self, kind: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for folder in self.dirs(kind):
            if folder.is_dir():
                for path in sorted(folder.glob("*.toml")):
                    found.setdefault(path.stem, path)
        return found


def _describe(exc: ValidationError, path: Path) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"key '{key}': {msg}")
    return f"{path}: " + "; ".join(parts)


def load_model(path: Path, model: type[M], what: str) -> tuple[M, str]:
    """Parse and validate one TOML file; returns the model and the file's sha256."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} file {path} cannot be read ({exc.strerror})", f"check the path to the {what} file") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", "fix the syntax at the position named") from None
    try:
        return model.model_validate(data), sha256_bytes(raw)
    except ValidationError as exc:
        fields = ", ".join(model.model_fields)
        raise ConfigError(_describe(exc, path), f"top-level keys of a {what} file are: {fields}") from None


def _looks_like_path(text: str) -> bool:
    return text.endswith(".toml") or os.sep in text or "/" in text


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(near)}?" if near else f"`edgekd {kind}` lists them"
    return ConfigError(f"unknown {kind[:-1]} '{name}' (known: {', '.join(sorted(known))})", hint)


def _by_path_or_name(kind: str, model: type[M], name_or_path: str, search: ConfigSearch) -> Resolved[M] | None:
    """The config at a path, or the file named so on the search path; None if there is none."""
    what = kind[:-1]
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        config, digest = load_model(path, model, what)
        return Resolved(path.stem, path, config, digest, "path")
    path = search.files(kind).get(name_or_path)
    if path is None:
        return None
    config, digest = load_model(path, model, what)
    return Resolved(name_or_path, path, config, digest, "name")


def load_target(name_or_path: str, search: ConfigSearch) -> Resolved[Target]:
    """A target by file path, by name, or by alias (`x86` picks the file that fits this host's CPU)."""
    found = _by_path_or_name("targets", Target, name_or_path, search)
    if found is not None:
        return found
    files = search.files("targets")
    loaded = {name: load_model(path, Target, "target") for name, path in files.items()}
    aliased = {name: pair for name, pair in loaded.items() if name_or_path in pair[0].aliases}
    if not aliased:
        aliases = {a for target, _ in loaded.values() for a in target.aliases}
        raise _unknown("targets", name_or_path, [*files, *aliases])
    flags = cpu_flags()
    fits = {name: pair for name, pair in aliased.items() if set(pair[0].host.cpu_flags) <= flags}
    if not fits:
        needs = "; ".join(f"{n} needs {' '.join(p[0].host.cpu_flags)}" for n, p in aliased.items())
        raise ConfigError(f"alias '{name_or_path}' fits no target on this host ({needs})", "name a target explicitly with --target")
    name = max(fits, key=lambda n: (len(fits[n][0].host.cpu_flags), n))
    target, digest = fits[name]
    have = " ".join(target.host.cpu_flags) or "no special CPU flags"
    return Resolved(name, files[name], target, digest, f"alias '{name_or_path}': this host has {have}")


def load_profile(name_or_path: str, search: ConfigSearch) -> Resolved[Profile]:
    found = _by_path_or_name("profiles", Profile, name_or_path, search)
    if found is None:
        raise _unknown("profiles", name_or_path, list(search.files("profiles")))
    return found


def load_project(path: Path | None) -> Resolved[Project]:
    """The project file given, else ./edgekd.toml, else the built-in example (via says which)."""
    if path is None and Path("edgekd.toml").is_file():
        path, via = Path("edgekd.toml"), "./edgekd.toml"
    elif path is None:
        path, via = BUILTIN_EXAMPLE, "built-in example (no --project given and no ./edgekd.toml here)"
    else:
        via = "--project"
    project, digest = load_model(path, Project, "project")
    return Resolved(project.name, path.resolve(), project, digest, via)
