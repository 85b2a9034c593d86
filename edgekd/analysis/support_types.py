"""Where each node of a model runs on a target: the types every support/placement analysis returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNS_ON = ("accelerator", "fallback", "unsupported")


@dataclass(frozen=True)
class NodeSupport:
    name: str
    op_type: str
    runs_on: str  # "accelerator" | "fallback" | "unsupported"
    reason: str


@dataclass(frozen=True)
class SupportReport:
    """Placement of every node of one model on one target.

    `accelerator` names what "accelerator" means here (e.g. "QNN HTP v75"), `fallback` what runs
    the rest (e.g. "ONNX Runtime CPU"); `notes` say how the verdicts were reached (which rules,
    which shapes, whether the model was quantized for the target first and on what data)."""

    target: str
    accelerator: str
    fallback: str
    nodes: list[NodeSupport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def node_share_off(self) -> float:
        """Share of nodes (0..1) that do not run on the accelerator; 0 for an empty graph."""
        if not self.nodes:
            return 0.0
        return sum(n.runs_on != "accelerator" for n in self.nodes) / len(self.nodes)

    def to_json(self) -> dict[str, Any]:
        counts = {kind: sum(n.runs_on == kind for n in self.nodes) for kind in RUNS_ON}
        return {
            "target": self.target,
            "accelerator": self.accelerator,
            "fallback": self.fallback,
            "node_share_off": self.node_share_off(),
            "counts": counts,
            "notes": list(self.notes),
            "nodes": [{"name": n.name, "op_type": n.op_type, "runs_on": n.runs_on, "reason": n.reason} for n in self.nodes],
        }
