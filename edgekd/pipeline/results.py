"""What a build produces besides files: numbers that carry their provenance, and budget verdicts."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Method = Literal["measured", "estimated", "not available"]


@dataclass(frozen=True)
class Metric:
    """A number and how it was obtained: measured (where, how), estimated (which model),
    or not available (why)."""

    value: float | int | None
    unit: str
    method: Method
    how: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metric:
        return cls(**data)


@dataclass(frozen=True)
class Verdict:
    """One budget checked after one stage. `limit is None` means the profile sets no budget. A budget
    is a ceiling (value <= limit), or with `floor` a floor (value >= limit: decode tokens/s)."""

    budget: str
    stage: str
    metric: str
    value: float | None
    limit: float | None
    unit: str
    floor: bool = False

    @property
    def status(self) -> Literal["pass", "fail", "no budget", "not measured"]:
        if self.value is None:
            return "not measured"
        if self.limit is None:
            return "no budget"
        return "pass" if (self.value >= self.limit if self.floor else self.value <= self.limit) else "fail"

    @property
    def relation(self) -> str:
        """How the value must stand to the limit: `>=` for a floor, `<=` for a ceiling."""
        return ">=" if self.floor else "<="

    def describe(self) -> str:
        broken = "<" if self.floor else ">"
        return f"{self.stage}: {self.budget} = {self.value:.4g} {self.unit} {broken} limit {self.limit:.4g} {self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass
class StageRecord:
    name: str
    status: Literal["ran", "cached", "not run"]
    cache_key: str = ""
    seconds: float = 0.0
    ran_at: str = ""
    artefacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "cache_key": self.cache_key,
            "seconds": round(self.seconds, 3), "ran_at": self.ran_at, "artefacts": self.artefacts,
            "metrics": {k: m.to_json() for k, m in self.metrics.items()},
            "verdicts": [v.to_json() for v in self.verdicts], "notes": self.notes,
        }
