"""How reports write numbers and table cells (Markdown, HTML, plots, the model card)."""
from __future__ import annotations

from typing import Any


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip() if unit and unit != "%" else f"{text}{unit}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")



def relation(verdict: dict[str, Any]) -> str:
    """`>=` for a floor budget (decode_tokens_per_s), `<=` for a ceiling; a verdict of a report written
    before floors has no "floor": a ceiling."""
    return ">=" if verdict.get("floor") else "<="


def broken(verdict: dict[str, Any]) -> str:
    """How a failed verdict's value stands to its limit: `<` under a floor, `>` over a ceiling."""
    return "<" if verdict.get("floor") else ">"
