"""A safetensors file's header checked before any parser reads it: the first 8 bytes are the
header's length (little-endian u64), then that many bytes of JSON, then the tensor data. A length
past the end of the file, or over MAX_HEADER bytes, is refused with a ConfigError naming the file."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from edgekd.errors import ConfigError

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit; real headers are kilobytes


def check_safetensors(path: Path, what: str = "weights") -> None:
    """ConfigError unless `path` starts with a sane safetensors header (a JSON object of a length
    that fits the file and MAX_HEADER)."""
    path = Path(path)
    hint = f"give a safetensors file saved from the {what}'s model (safetensors.torch.save_file), copied whole"
    try:
        with open(path, "rb") as fh:
            size = path.stat().st_size
            head = fh.read(8)
            if len(head) < 8:
                raise ConfigError(f"{path}: not a safetensors file ({size} bytes, shorter than its 8-byte header length)", hint)
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER or length > size - 8:
                raise ConfigError(f"{path}: safetensors header length {length:,} bytes is more than the file's "
                                  f"{size - 8:,} remaining bytes or the {MAX_HEADER:,}-byte limit", hint)
            header = json.loads(fh.read(length).decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})", hint) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ConfigError(f"{path}: safetensors header is not JSON", hint) from None
    if not isinstance(header, dict):
        raise ConfigError(f"{path}: safetensors header is not a JSON object", hint)
