"""Every runtime's backend, by the runtime name a target file gives. Adding a runtime is one package
with a registered backend, plus one line here."""
from __future__ import annotations

import edgekd.backends.ort.backend
import edgekd.backends.qnn.backend
import edgekd.backends.tensorrt.backend  # noqa: F401  (importing a backend registers it)
from edgekd.backends.base import BACKENDS, Backend, get

__all__ = ["BACKENDS", "Backend", "get"]
