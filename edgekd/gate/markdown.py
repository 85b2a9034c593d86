"""The gate's result as Markdown for a pull-request comment: verdict, warnings, one table row per check."""
from __future__ import annotations

from edgekd.gate.render import cells, headline

DECODER_CHECKS = ("time to first token p90", "decode tokens/s")
from edgekd.gate.run import GateResult

COLUMNS = (("check", "check"), ("baseline", "baseline"), ("candidate", "candidate"), ("change", "change"),
           ("interval", "confidence interval"), ("threshold", "threshold"), ("verdict", "verdict"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(result: GateResult) -> str:
    gate = result.thresholds.gate
    lines = [f"## edgekd gate: {'**FAIL**' if result.failed else 'PASS'}", "",
             f"{headline(result)}.", "",
             f"- candidate: `{result.candidate.label()}`",
             f"- baseline: `{result.baseline.label()}`",
             f"- thresholds: {_cell(result.thresholds.source)}", ""]
    if result.warnings:
        lines += [f"> **Warning:** {_cell(w)}" for w in result.warnings] + [""]
    lines += ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for check in result.checks:
        row = cells(check)
        if check.failed:
            row = {k: f"**{v}**" for k, v in row.items()}
        lines.append("| " + " | ".join(_cell(row[key]) for key, _ in COLUMNS) + " |")
    lines += ["", "Notes:"]
    lines += [f"- {_cell(c.name)}: {_cell(c.detail)}" for c in result.checks
              if c.detail and (c.kind == "regression" or c.status == "not applicable")]
    lines += ["",
              f"Latency is judged on the raw per-run samples: the {gate.confidence:.0%} confidence interval of "
              "p90(candidate) / p90(baseline) from a seeded circular block bootstrap "
              f"({gate.bootstrap_resamples} resamples, seed {gate.seed}). It fails only when the whole interval is above "
              "the threshold, passes when the whole interval is at or below it, and is *inconclusive* (not a failure) "
              "in between. The interval covers the noise within each bench run, not drift between runs or machines: "
              "the threshold's margin is for that (docs/ci.md).", ""]
    if any(c.name in DECODER_CHECKS for c in result.checks):
        lines += [("Decoders: time to first token is judged the same way on the prompt passes' samples (p90), decode "
                   "tokens/s on the mean per-token time of the generations (tokens/s = 1000 / mean ms), and peak memory "
                   "(the bench worker's peak RSS, one number per build) without an interval."), ""]
    return "\n".join(lines)
