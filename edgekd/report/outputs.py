"""The documents of a build folder, written from its report (report.json first: the others are
views of it). One place, so that a rebuild or `edgekd bench --device` refreshes every view."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import atomic_write_text


def write_all(out_dir: Path, report: dict[str, Any]) -> None:
    """report.json and its views (report.md, ...) in `out_dir`, each written atomically."""
    from edgekd.report import html, markdown, model_card

    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=1))
    atomic_write_text(out_dir / "report.md", markdown.render(report))
    atomic_write_text(out_dir / "report.html", html.render(report))
    atomic_write_text(out_dir / "MODEL_CARD.md", model_card.render(report))
