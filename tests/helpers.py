"""Helpers shared by the test modules (import them from here, not from conftest: a package folder may
have its own conftest.py, and `conftest` would then name the wrong module)."""
from __future__ import annotations

from pathlib import Path

ZOO_ARCHS = ("resnet", "mobilenet_v2", "efficientnet", "vit", "bert", "distilbert", "gpt2")
ZOO_EXPORTERS = ("optimum", "torch")
ZOO = [(arch, exporter) for arch in ZOO_ARCHS for exporter in ZOO_EXPORTERS]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
