"""A safetensors file's header checked before any parser reads it: the first 8 bytes are the
header's length (little-endian u64), then that many bytes of JSON, then the tensor data. A length
past the end of the file, or over MAX_HEADER bytes, is refused with a ConfigError naming the file."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from edgekd.errors import ConfigError

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit; real headers are kilobytes


def header_problem(path: Path) -> str | None:
    """What is wrong with the start of the safetensors file `path`, or None."""
    try:
        with open(path, "rb") as fh:
            size = Path(path).stat().st_size
            head = fh.read(8)
            if len(head) < 8:
                return f"not a safetensors file: {size} bytes, shorter than the 8-byte header length"
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER or length > size - 8:
                return (f"safetensors header length {length:,} bytes is more than the file's {size - 8:,} remaining bytes "
                        f"or the {MAX_HEADER:,}-byte limit")
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "safetensors header is not JSON"
    return None if isinstance(header, dict) else "safetensors header is not a JSON object"


def check_safetensors(path: Path, what: str = "weights", hint: str | None = None) -> None:
    """ConfigError `PATH: cannot load the WHAT (problem)` unless `path` starts with a sane
    safetensors header (a JSON object whose length fits the file and MAX_HEADER)."""
    problem = header_problem(Path(path))
    if problem is not None:
        raise ConfigError(f"{path}: cannot load the {what} ({problem})",
                          hint or "give a safetensors file saved with safetensors.torch.save_file, copied whole")
