"""Reading the two builds the gate compares: a build folder or its report.json, checked enough that
the gate never stumbles on a missing key (bad input is one line and exit 2, not a traceback), and
checked against its folder (edgekd.pipeline.build_folder): a folder a build did not finish is
refused, and so is one where any file the report lists differs from its recorded sha256. A report
none of whose files is beside it (a baseline kept as a single file) is taken on its own."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.pipeline import build_folder
from edgekd.pipeline.build_folder import BuildFolderError
from edgekd.pipeline.results import Metric
from edgekd.tasks.specs import ACCURACY, MetricSpec

REPORT_FILE = "report.json"
SCHEMA_VERSION = 1
_HINT = "give a build folder made by `edgekd build` or the report.json in it"


class GateInputError(EdgekdError):
    """A report the gate cannot use (exit 2)."""


@dataclass(frozen=True)
class Report:
    role: str  # "candidate" or "baseline", as messages name it
    path: Path
    data: dict[str, Any]

    def metrics(self) -> dict[str, Metric]:
        """Every stage's metrics by name (names are unique across stages)."""
        return {name: metric for stage in self.data["stages"] for name, metric in _stage_metrics(self, stage).items()}

    @property
    def latency(self) -> dict[str, Any] | None:
        return self.data.get("latency")

    @property
    def metric(self) -> MetricSpec:
        """The task's quality metric (report["task"]["metric"]); accuracy for a report written before
        tasks. A malformed one is bad input."""
        task = self.data.get("task")
        if task is None:
            return ACCURACY
        raw = task.get("metric") if isinstance(task, dict) else None
        if not (isinstance(raw, dict) and isinstance(raw.get("name"), str) and raw["name"]
                and isinstance(raw.get("unit"), str) and isinstance(raw.get("higher_is_better"), bool)):
            raise self.bad("'task' must be {name, metric: {name, unit, higher_is_better}}")
        return MetricSpec(raw["name"], raw["unit"], raw["higher_is_better"])

    def quality(self, row: str = "engine") -> dict[str, Any] | None:
        """Model `row`'s task metric (report[<metric name>][row]) where it has a number."""
        value = (self.data.get(self.metric.name) or {}).get(row)
        return value if isinstance(value, dict) and isinstance(value.get("value"), (int, float)) else None

    def field(self, section: str, key: str) -> Any:
        block = self.data.get(section)
        return block.get(key) if isinstance(block, dict) else None

    def label(self) -> str:
        """e.g. `build/x86/report.json (digits -> x86-avx2, built 2026-01-01T00:00:00+00:00)`."""
        return (f"{self.path} ({self.field('project', 'name')} -> {self.field('target', 'name')}, "
                f"built {self.data.get('created_at', 'at an unknown time')})")

    def bad(self, what: str, hint: str = _HINT) -> GateInputError:
        return GateInputError(f"{self.role} report {self.path}: {what}", hint)


def _stage_metrics(report: Report, stage: dict[str, Any]) -> dict[str, Metric]:
    out = {}
    for name, raw in stage.get("metrics", {}).items():
        try:
            out[name] = Metric.from_json(raw)
        except TypeError:
            raise report.bad(f"metric '{name}' of stage '{stage.get('name')}' is not {{value, unit, method, how}}") from None
    return out


def _consistent(role: str, check: Callable[[], None]) -> None:
    """Run a build-folder check; its BuildFolderError becomes the gate's, naming the role."""
    try:
        check()
    except BuildFolderError as exc:
        raise GateInputError(f"{role} {exc}", exc.hint) from None


def _resolve(path: Path, role: str) -> Path:
    _consistent(role, lambda: build_folder.check_finished(path if path.is_dir() else path.parent))
    if path.is_dir():
        path = path / REPORT_FILE
        if not path.is_file():
            raise GateInputError(f"{role} {path.parent}: no {REPORT_FILE} in this folder", _HINT)
    elif not path.is_file():
        raise GateInputError(f"{role} {path}: no such file or folder", _HINT)
    return path


def load_report(path: Path, role: str) -> Report:
    """The report at `path` (a build folder or a report.json), or GateInputError naming it."""
    path = _resolve(Path(path), role)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateInputError(f"{role} report {path}: not readable JSON ({exc})", _HINT) from None
    if not isinstance(data, dict) or "schema_version" not in data or not isinstance(data.get("stages"), list):
        raise GateInputError(f"{role} {path}: not an edgekd build report (no schema_version/stages)", _HINT)
    report = Report(role, path, data)
    if data["schema_version"] != SCHEMA_VERSION:
        raise report.bad(f"schema_version {data['schema_version']}; this edgekd reads {SCHEMA_VERSION}",
                         "compare reports made by the same edgekd release")
    if not all(isinstance(s, dict) and isinstance(s.get("metrics", {}), dict) for s in data["stages"]):
        raise report.bad("'stages' must be a list of stage records with a 'metrics' table")
    if data.get("latency") is not None and not isinstance(data["latency"], dict):
        raise report.bad("'latency' must be a table or null")
    report.metrics()  # every metric parses
    _ = report.metric  # a malformed "task" is bad input here, not a traceback later
    _consistent(role, lambda: build_folder.check_artefacts(path.parent, data, alone_ok=True))
    return report
