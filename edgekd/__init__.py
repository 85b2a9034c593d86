"""edgekd: distill a teacher into a student, quantize it, export ONNX and build the engine for a
hardware target, checking the team's budgets at every stage.

`import edgekd` is light: torch and the runtimes are imported only when a stage needs them.
"""
from __future__ import annotations

from typing import Any

from edgekd.common.version import __version__


def build(*args: Any, **kwargs: Any) -> Any:
    """See `edgekd.api.build`."""
    from edgekd.api import build as _build

    return _build(*args, **kwargs)


__all__ = ["__version__", "build"]
