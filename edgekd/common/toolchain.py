"""What is installed and what machine this is: versions for cache keys and reports."""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import os
import platform
from types import ModuleType
from typing import Iterator

from edgekd.errors import ToolchainMissing

# distribution name -> what to tell a user who lacks it
_INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 (CPU build), then reinstall edgekd",
    "onnx": "pip install onnx",
    "onnxscript": "pip install onnxscript (torch.onnx's exporter needs it)",
    "onnxruntime": "pip install onnxruntime",
    "safetensors": "pip install safetensors",
    "sklearn": "pip install scikit-learn",
}
_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise ToolchainMissing saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        hint = _INSTALL_HINTS.get(top, f"pip install {top}")
        raise ToolchainMissing(f"{purpose} needs the Python package '{top}', which is not importable ({exc})", hint) from exc


def version(distribution: str) -> str:
    """Installed version of a distribution, or 'absent'; never imports the package."""
    try:
        return importlib.metadata.version(_DISTRIBUTIONS.get(distribution, distribution))
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def versions(distributions: tuple[str, ...]) -> dict[str, str]:
    return {name: version(name) for name in distributions}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """CPU feature flags of this host as Linux names them (/proc/cpuinfo); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def edgekd_fingerprint() -> str:
    """edgekd's version plus a hash of its own source files: a cache entry made by other edgekd
    code (an upgrade, or a developer's edit) is never re-used."""
    import hashlib
    from pathlib import Path

    from edgekd.common.version import __version__

    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent  # the edgekd package
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:16]}"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_info() -> dict[str, object]:
    """The machine measurements were taken on, as a report records it."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch on `count` intra-op threads, restored after. Batch-1 forwards of these students gain
    nothing from more, and on a shared host OpenMP's spinning threads made one forward of
    mobilenet_v2 (width 1, 28x28) take 1.25 s instead of 0.01 s (measured on a busy 2-core host)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence a third-party library for the block: its prints (stdout/stderr), its warnings and
    everything below ERROR on the logging tree (the exporters print progress and advice)."""
    import io
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
