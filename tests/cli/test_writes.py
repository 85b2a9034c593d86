"""An `edgekd build` writes into its build folder, its cache and a temp folder it removes: nothing
in the working folder, the temp folder or the home folder, except the device id onnxruntime records
when it is imported (edgekd.common.process_env says why that one is left)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ORT_DEVICE_ID = Path(".cache/Microsoft/DeveloperTools/.onnxruntime")


def test_a_build_writes_only_its_folder_and_its_cache(cold_build, cache_dir: Path, tmp_path: Path) -> None:
    home, tmp, cwd = (tmp_path / name for name in ("home", "tmp", "cwd"))
    for folder in (home, tmp, cwd):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": os.pathsep.join(sys.path)}
    for key in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "EDGEKD_CACHE_DIR"):
        env.pop(key, None)
    run = subprocess.run([sys.executable, "-m", "edgekd.cli.main", "build", "--profile", "ci", "--out", str(tmp_path / "out"),
                          "--cache-dir", str(cache_dir)], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "report.json").is_file()
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    written = {p.relative_to(home) for p in home.rglob("*") if p.is_file()}
    assert written <= {ORT_DEVICE_ID / "deviceid", ORT_DEVICE_ID / "onnxruntime.db"}, written
    assert (cache_dir / "tools" / "matplotlib").is_dir()  # matplotlib's font cache lives in the edgekd cache
