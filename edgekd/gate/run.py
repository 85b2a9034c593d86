"""`edgekd gate`: a candidate build against a baseline build, for CI. Which thresholds apply, the
checks, the warnings when the two were measured on different machines, and the verdict."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekd.config.loading import ConfigSearch, load_model, load_profile
from edgekd.config.models import Budgets, GateConfig, Profile
from edgekd.errors import ConfigError
from edgekd.gate import checks
from edgekd.gate.checks import Check
from edgekd.gate.decoder_checks import lm_checks
from edgekd.gate.reports import Report, load_report

HOST_KEYS = ("cpu", "machine", "cores", "os")


@dataclass(frozen=True)
class Thresholds:
    budgets: Budgets
    gate: GateConfig
    source: str  # where they came from, in words


@dataclass
class GateResult:
    candidate: Report
    baseline: Report
    thresholds: Thresholds
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    @property
    def verdict(self) -> str:
        return "fail" if self.failed else "pass"

    def to_json(self) -> dict[str, Any]:
        def side(r: Report) -> dict[str, Any]:
            return {"report": str(r.path), "project": r.field("project", "name"), "target": r.field("target", "name"),
                    "created_at": r.data.get("created_at"), "host": r.data.get("host")}

        return {"verdict": self.verdict, "failed": [c.name for c in self.failed],
                "candidate": side(self.candidate), "baseline": side(self.baseline),
                "thresholds": {"source": self.thresholds.source, "gate": self.thresholds.gate.model_dump(),
                               "budgets": self.thresholds.budgets.model_dump()},
                "checks": [c.to_json() for c in self.checks], "warnings": self.warnings}


def _report_profile_gate(cand: Report) -> tuple[GateConfig, str]:
    """The [gate] of the profile the candidate was built with, when that file is still here unchanged."""
    path, digest = cand.field("profile", "file"), cand.field("profile", "sha256")
    name = cand.field("profile", "name")
    if isinstance(path, str) and Path(path).is_file():
        try:
            profile, sha = load_model(Path(path), Profile, "profile")
        except ConfigError:
            profile, sha = None, None
        if profile is not None and sha == digest:
            return profile.gate, f"[gate] of profile {name} ({path}, the file the candidate was built with)"
    return GateConfig(), (f"edgekd's default [gate] thresholds (profile {name}'s file {path} is not here unchanged; "
                          "pass --profile to use a profile's [gate])")


def thresholds(cand: Report, profile: str | None, search: ConfigSearch, overrides: dict[str, Any]) -> Thresholds:
    """--profile's budgets and [gate] if given, else the budgets the candidate was built with and its
    profile's [gate]; then the command line's overrides (None: not given)."""
    if profile is not None:
        resolved = load_profile(profile, search)
        budgets, gate, source = resolved.config.budgets, resolved.config.gate, f"profile {resolved.name} ({resolved.path})"
    else:
        raw = cand.field("profile", "budgets")
        if not isinstance(raw, dict):
            raise cand.bad("it records no profile budgets", "pass --profile NAME to give the budgets")
        try:
            budgets = Budgets.model_validate(raw)
        except ValueError as exc:
            raise cand.bad(f"its profile budgets do not validate ({exc.__class__.__name__})",
                           "pass --profile NAME to give the budgets") from None
        gate, gate_source = _report_profile_gate(cand)
        source = f"budgets the candidate was built with (profile {cand.field('profile', 'name')}); {gate_source}"
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        try:
            gate = GateConfig.model_validate({**gate.model_dump(), **given})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))} = {e.get('input')!r}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"gate option out of range: {problems}", "see `edgekd gate --help`") from None
        source += "; overridden on the command line: " + ", ".join(f"{k}={v}" for k, v in given.items())
    return Thresholds(budgets, gate, source)


def _differences(base: Report, cand: Report, section: str, keys: tuple[str, ...] | None = None) -> list[str]:
    b, c = base.data.get(section) or {}, cand.data.get(section) or {}
    keys = keys or tuple(sorted(set(b) | set(c)))
    return [f"{k} {b.get(k)!r} vs {c.get(k)!r}" for k in keys if b.get(k) != c.get(k)]


def warnings(base: Report, cand: Report) -> list[str]:
    """What makes the comparison weaker than it looks (the gate still runs)."""
    out = []
    host = _differences(base, cand, "host", HOST_KEYS)
    if host:
        out.append("measured on different hosts (baseline vs candidate: " + "; ".join(host) + "): a latency change may be "
                   "the machine's, not the build's; measure both on one machine (docs/ci.md)")
    for section, what in (("target", "targets"), ("project", "projects")):
        if base.field(section, "name") != cand.field(section, "name"):
            out.append(f"different {what}: baseline {base.field(section, 'name')!r}, candidate {cand.field(section, 'name')!r}")
        elif base.field(section, "sha256") != cand.field(section, "sha256"):
            out.append(f"the {section} file {cand.field(section, 'name')!r} changed between the two builds")
    tools = _differences(base, cand, "toolchain")
    if tools:
        out.append("different toolchains (baseline vs candidate): " + "; ".join(tools))
    return out


def gate(candidate: Path, baseline: Path, profile: str | None = None, search: ConfigSearch | None = None,
         **overrides: Any) -> GateResult:
    """Compare two builds (folders or report.json files). `overrides` are GateConfig fields (None: the
    profile's value). Raises GateInputError/ConfigError (exit 2) on bad input; a failing gate is a
    result with verdict 'fail', not an exception."""
    cand, base = load_report(candidate, "candidate"), load_report(baseline, "baseline")
    limits = thresholds(cand, profile, search or ConfigSearch(), overrides)
    found = [checks.latency(base, cand, limits.gate), checks.quality(base, cand, limits.gate),
             checks.size(base, cand, limits.gate), *lm_checks(base, cand, limits.gate), *checks.budgets(base, cand, limits.budgets)]
    return GateResult(cand, base, limits, found, warnings(base, cand))
