"""edgekd's version (pyproject.toml's [project] version; a test keeps them equal)."""
from __future__ import annotations

__version__ = "0.1.0"
