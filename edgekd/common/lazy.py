"""A module imported on first use: for heavy packages (torch) that a module names at its top but that
the paths which never call into it (a fully cached rebuild, `edgekd gate`) must not pay for."""
from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """`torch = LazyModule("torch")`: `torch.x` imports torch the first time and is torch.x after."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"
