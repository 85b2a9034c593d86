"""The gate's result in words: the cells every output shares, and the printed summary."""
from __future__ import annotations

from edgekd.gate.checks import Check
from edgekd.gate.run import GateResult

NA = "n/a"


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return NA
    text = f"{value:.4g}"
    return f"{text} {unit}" if unit else text


def signed(value: float | None, unit: str) -> str:
    return NA if value is None else f"{value:+.2f} {unit}"


def cells(check: Check) -> dict[str, str]:
    """check, baseline, candidate, change, interval, threshold, verdict: as tables and lines show them."""
    if check.interval is not None:
        interval = f"{signed(check.interval[0], check.change_unit)} .. {signed(check.interval[1], check.change_unit)}"
    else:
        interval = NA
    return {"check": check.name, "baseline": number(check.baseline, check.unit),
            "candidate": number(check.candidate, check.unit), "change": signed(check.change, check.change_unit),
            "interval": interval, "threshold": check.threshold_text or NA,
            "verdict": "FAIL" if check.failed else check.status}


def headline(result: GateResult) -> str:
    counts = {s: sum(c.status == s for c in result.checks) for s in ("fail", "inconclusive")}
    skipped = sum(c.skipped for c in result.checks)
    return (f"{result.verdict.upper()}: {counts['fail']} of {len(result.checks)} checks failed, "
            f"{counts['inconclusive']} inconclusive, {skipped} not checked (not measured, not comparable, not "
            "applicable or without a budget)")


def summary(result: GateResult) -> str:
    """One line per check (why, for one that was not checked), then the verdict; the notes on how each
    number was obtained are in the Markdown and JSON."""
    lines = [f"edgekd gate: candidate {result.candidate.label()}",
             f"             baseline  {result.baseline.label()}",
             f"  thresholds: {result.thresholds.source}"]
    lines += [f"  warning: {w}" for w in result.warnings]
    for check in result.checks:
        c = cells(check)
        change = f"  change {c['change']}" if check.change is not None else ""
        interval = f"  {result.thresholds.gate.confidence:.0%} CI {c['interval']}" if check.interval else ""
        why = f"  ({check.detail})" if check.skipped and check.detail else ""
        estimated = "  (ESTIMATED, not measured)" if "ESTIMATED" in check.detail and not why else ""
        lines.append(f"  {c['verdict']:<14} {c['check']:<44} {c['baseline']} -> {c['candidate']}{change}{interval}  "
                     f"limit {c['threshold']}{estimated}{why}")
    lines.append(f"edgekd gate: {headline(result)}")
    return "\n".join(lines)
