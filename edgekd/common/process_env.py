"""An `edgekd` command writes only into its build folder, its cache and a temp folder it removes.

The libraries it loads write elsewhere unless told: matplotlib's font cache (~/.config/matplotlib,
~/.cache/matplotlib), torch inductor's cache (/tmp/torchinductor_<user>), onnxruntime's session
file in the temp folder. `contained(cache_root)` points them into the edgekd cache
(`<cache>/tools/`) and the process's temp folder (TMPDIR, inherited by worker processes: a folder
`edgekd-run.<owner>` removed when the command ends, swept by the next one when it was killed).
One write is left that edgekd cannot redirect without moving the user's other caches: onnxruntime
records a device id under $XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime when it is imported.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekd.common.tempdirs import sweep_temp_dirs, temp_dir

TOOL_DIRS = {"MPLCONFIGDIR": "matplotlib", "TORCHINDUCTOR_CACHE_DIR": "torchinductor"}


@contextmanager
def contained(cache_root: Path) -> Iterator[Path]:
    """For the block: TMPDIR is a fresh temp folder (removed after), and the tool caches a user has
    not placed themselves live under `cache_root/tools`. The environment is restored after."""
    sweep_temp_dirs()  # in the real temp folder, before TMPDIR points elsewhere
    keys = ("TMPDIR", *TOOL_DIRS)
    saved = {key: os.environ.get(key) for key in keys}
    with temp_dir("run") as scratch:
        os.environ["TMPDIR"] = str(scratch)
        for key, name in TOOL_DIRS.items():
            os.environ.setdefault(key, str(cache_root / "tools" / name))
        tempfile.tempdir = None  # gettempdir() reads TMPDIR again
        try:
            yield scratch
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            tempfile.tempdir = None
