"""Shared fixtures: one cold build of the built-in example under the `ci` profile, re-used by the
end-to-end tests (each build writes into its own folder; the stage cache is per test session)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@dataclass
class Run:
    code: int
    out: str
    err: str
    out_dir: Path

    @property
    def report(self) -> dict:
        return json.loads((self.out_dir / "report.json").read_text())


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stage-cache")


@pytest.fixture
def edgekd(capsys: pytest.CaptureFixture[str], cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in-process (`edgekd.cli.main.main`) with the session's cache; returns a Run."""
    from edgekd.cli.main import main

    monkeypatch.setenv("EDGEKD_CACHE_DIR", str(cache_dir))
    monkeypatch.syspath_prepend(str(HERE / "projects"))

    def run(*args: str, out_dir: Path | None = None) -> Run:
        argv = list(args) + (["--out", str(out_dir)] if out_dir is not None else [])
        capsys.readouterr()
        code = main(argv)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err, out_dir or Path("."))

    return run


@pytest.fixture(scope="session")
def cold_build(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Run:
    """The built-in example built once for `x86` with the ci profile, every stage run (--force:
    tests that ran earlier may have cached a stage of it), filling the session's cache."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from edgekd.cli.main import main

    out_dir = tmp_path_factory.mktemp("cold") / "x86"
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEKD_CACHE_DIR", str(cache_dir))
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["build", "--target", "x86", "--profile", "ci", "--force", "--out", str(out_dir)])
    finally:
        mp.undo()
    return Run(code, out.getvalue(), err.getvalue(), out_dir)


# ---------------------------------------------------------------- the zoo of real architectures

from helpers import ZOO, ZOO_ARCHS, ZOO_EXPORTERS, write  # noqa: E402,F401  (shared helpers live in tests/helpers.py)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory):
    """`zoo(arch, exporter="optimum") -> Path` of model.onnx: a transformers architecture from a tiny
    config (random weights, edgekd.examples.zoo), exported once per test session with optimum-onnx
    (config.json beside it) or torch.onnx."""
    pytest.importorskip("transformers")
    from edgekd.examples import zoo as models

    root = tmp_path_factory.mktemp("zoo")

    def get(arch: str, exporter: str = "optimum") -> Path:
        if exporter == "optimum":
            pytest.importorskip("optimum.exporters.onnx")
        return models.export(arch, root, "tiny", exporter)

    return get
