"""Size checks of `.npy` and `.npz` files before numpy reads them: numpy allocates what an array's
header declares, so a header that lies (a truncated file, a doctored shape) ends in a MemoryError or
an internal error instead of a message. Every array's header is read first (no pickle: an object
dtype is refused) and its data must fill exactly what the file holds after the header; arrays read
into memory must also fit in this host's memory together. Failures are DataError naming the file."""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from edgekd.errors import DataError

HINT = "save arrays with numpy.save / numpy.savez (numeric dtypes), and copy the file whole"
_MAX_HEADER = 100_000  # bytes of one array's header (numpy's own default limit is 10,000)


def physical_memory() -> int:
    """Bytes of memory on this host (a very large number when the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _header(fh: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the array at the start of `fh`."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0  # 3.0: 2.0's layout, utf-8
        shape, _, dtype = read(fh, max_header_size=_MAX_HEADER)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise DataError(f"{where}: not a readable numpy file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", HINT) from None
    if dtype.hasobject:
        raise DataError(f"{where}: holds pickled objects (dtype {dtype}), which edgekd does not load", HINT)
    return tuple(int(d) for d in shape), dtype, fh.tell()


def _data_bytes(shape: tuple[int, ...], dtype: np.dtype, available: int, where: str) -> int:
    need = math.prod(shape) * dtype.itemsize
    if need != available:
        raise DataError(f"{where}: its header declares {dtype} {list(shape)} ({need:,} bytes) but the file holds "
                        f"{available:,} bytes of data (truncated or altered)", HINT)
    return need


def check_npy(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a `.npy` file whose data exactly fills the file after its header."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            shape, dtype, offset = _header(fh, str(path))
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})", HINT) from None
    _data_bytes(shape, dtype, size - offset, str(path))
    return shape, dtype


def check_npz(path: Path, max_bytes: int | None = None) -> int:
    """The bytes a `.npz` file's arrays take in memory, after checking each member's header against
    its size; more than `max_bytes` (default: this host's memory) is refused."""
    path = Path(path)
    limit = physical_memory() if max_bytes is None else max_bytes
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                where = f"{path} (array {info.filename})"
                with archive.open(info) as fh:
                    shape, dtype, offset = _header(fh, where)  # type: ignore[arg-type]
                total += _data_bytes(shape, dtype, info.file_size - offset, where)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})", HINT) from None
    if total > limit:
        raise DataError(f"{path}: its arrays take {total:,} bytes, more than the {limit:,} bytes this can read into memory", HINT)
    return total
