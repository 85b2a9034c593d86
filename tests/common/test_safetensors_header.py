"""edgekd/common/safetensors_header.py: a safetensors header length past the file or over 100 MB is a
ConfigError naming the file, before any parser reads it; edgekd's weight loading uses it."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from edgekd.common.safetensors_header import MAX_HEADER, check_safetensors
from edgekd.errors import ConfigError

torch = pytest.importorskip("torch")


def saved(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"weight": torch.ones(2, 3)}, str(path))
    return path


def test_a_real_file_passes(tmp_path: Path) -> None:
    check_safetensors(saved(tmp_path))


@pytest.mark.parametrize("case", ["past-end", "over-limit", "short", "not-json", "not-object", "missing"])
def test_bad_headers_are_refused(tmp_path: Path, case: str) -> None:
    path = tmp_path / "w.safetensors"
    body = b'{"a": 1}'
    data = {"past-end": struct.pack("<Q", 1 << 40) + body, "over-limit": struct.pack("<Q", MAX_HEADER + 1) + b" " * 16,
            "short": b"\x01\x02", "not-json": struct.pack("<Q", 4) + b"\xff\xfe{]", "not-object": struct.pack("<Q", 2) + b"[]",
            "missing": None}[case]
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        check_safetensors(path, "student")
    assert str(path) in raised.value.one_line() and "\n" not in raised.value.one_line()


def test_load_weights_refuses_a_doctored_header(tmp_path: Path) -> None:
    from edgekd.distill.weights import load_weights, read_metadata

    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", len(data) * 1000)
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="w.safetensors: cannot load the student weights .safetensors header length"):
        load_weights(torch.nn.Linear(3, 2), path, "student")
    assert read_metadata(path) == {}
