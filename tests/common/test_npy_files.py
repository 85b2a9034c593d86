"""edgekd/common/npy_files.py and its callers: a `.npy`/`.npz` whose header lies about its size, or that
holds pickled objects, is a DataError naming the file, never a MemoryError or an internal error."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekd.common.npy_files import check_npy, check_npz
from edgekd.errors import DataError

HUGE = (10**12, 10**6)


def npy_bytes(array: np.ndarray, shape: tuple[int, ...] | None = None) -> bytes:
    """`array` saved as .npy, its header declaring `shape` (default: its own)."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": shape or array.shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    buffer.write(array.tobytes())
    return buffer.getvalue()


def npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def test_good_files_pass(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.ones((3, 4), dtype=np.float32))
    assert check_npy(tmp_path / "a.npy") == ((3, 4), np.dtype(np.float32))
    np.savez_compressed(tmp_path / "b.npz", x=np.ones((5, 2)), name=np.array("text"))
    assert check_npz(tmp_path / "b.npz") == 5 * 2 * 8 + 4 * 4


@pytest.mark.parametrize("case", ["truncated", "appended", "huge-shape", "objects", "garbage", "empty"])
def test_bad_npy_is_a_data_error(tmp_path: Path, case: str) -> None:
    good = npy_bytes(np.arange(10, dtype=np.float32))
    data = {"truncated": good[:-4], "appended": good + b"\0" * 8, "huge-shape": npy_bytes(np.arange(10, dtype=np.float32), HUGE),
            "objects": b"", "garbage": b"not numpy at all", "empty": b""}[case]
    path = tmp_path / "x.npy"
    if case == "objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(data)
    with pytest.raises(DataError) as raised:
        check_npy(path)
    assert str(path) in raised.value.one_line() and "\n" not in raised.value.one_line()


@pytest.mark.parametrize("case", ["huge-shape", "truncated", "objects", "not-zip"])
def test_bad_npz_is_a_data_error(tmp_path: Path, case: str) -> None:
    good = npy_bytes(np.arange(10, dtype=np.float32))
    path = tmp_path / "x.npz"
    if case == "not-zip":
        path.write_bytes(b"PK but not really")
    elif case == "objects":
        np.savez(path, a=np.array([{"a": 1}], dtype=object))
    else:
        npz(path, {"a": good, "b": npy_bytes(np.arange(4, dtype=np.int64), HUGE) if case == "huge-shape" else good[:-1]})
    with pytest.raises(DataError, match="x.npz"):
        check_npz(path)


def test_npz_over_the_memory_limit_is_refused(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "z.npz", a=np.zeros(1 << 20, dtype=np.uint8))  # 1 MiB that compresses to ~1 KB
    assert check_npz(tmp_path / "z.npz") == 1 << 20
    with pytest.raises(DataError, match="more than the 1,000 bytes"):
        check_npz(tmp_path / "z.npz", max_bytes=1000)


def test_logits_file_with_a_doctored_shape_is_a_data_error(tmp_path: Path) -> None:
    from edgekd.distill.logits_file import read_logits_file, write_logits_file

    path = tmp_path / "soft.npz"
    write_logits_file(np.random.default_rng(0).standard_normal((8, 5)), path, 3, "a" * 64, "test")
    with zipfile.ZipFile(path) as archive:
        members = {info.filename[:-4]: archive.read(info) for info in archive.infolist()}
    members["probs"] = npy_bytes(np.zeros((8, 3), dtype=np.float32), HUGE)
    npz(path, members)
    with pytest.raises(DataError, match="soft.npz .array probs.npy.: its header declares float32"):
        read_logits_file(path)


def test_cache_npy_with_a_lying_header_is_a_miss(tmp_path: Path) -> None:
    from edgekd.distill.streaming import open_rows

    path = tmp_path / "teacher-logits-k.npy"
    np.save(path, np.ones((6, 3), dtype=np.float32))
    assert open_rows(path, 6) is not None
    path.write_bytes(path.read_bytes() + b"\0" * 12)  # a row appended outside edgekd
    assert open_rows(path, 6) is None
    path.write_bytes(npy_bytes(np.ones((6, 3), dtype=np.float32), HUGE))
    assert open_rows(path, 6) is None


def test_feed_folder_with_a_lying_header_is_refused(tmp_path: Path) -> None:
    from edgekd.errors import ConfigError
    from edgekd.graph.feeds import read_feed_arrays

    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "input.npy").write_bytes(npy_bytes(np.ones((2, 3), dtype=np.float32), HUGE))
    with pytest.raises(ConfigError, match="input.npy: its header declares"):
        read_feed_arrays(tmp_path / "feeds")
