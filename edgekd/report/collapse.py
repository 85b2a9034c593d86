"""The measured model-collapse curve a generation-N (N >= 2) student's report and model card show next
to the warning about repeated distillation: `lm_generations.json` as benchmarks/lm_generations.py
writes it, `{"generations": [{"generation", "real_fraction", "perplexity", "distinct_2"}], "host"?}`.

Where the build looks, first found wins (report["collapse"]["looked"] lists both):
1. `lm_generations.json` beside the project file: a team's own measurement, kept with its project;
2. `benchmarks/results/lm_generations.json` of the edgekd source tree this edgekd runs from (the
   measurement edgekd's own benchmark made; absent from an installed wheel).
The build copies the curve into report.json with the file's path, sha256 and the host it names, so
every view (and a later `edgekd bench` rewrite) shows the same numbers; absent, it says "no
measurement" and where it looked. A file that is there but malformed is reported as such, not used."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import sha256_file

FILE = "lm_generations.json"
PACKAGED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / FILE
FIELDS = ("generation", "real_fraction", "perplexity", "distinct_2")
MIN_GENERATION = 2  # a student of a distilled teacher: the card's warning starts here


def candidates(project_file: str | None, packaged: Path = PACKAGED) -> list[Path]:
    """Where the measurement is looked for, in order."""
    near = [Path(project_file).parent / FILE] if project_file and Path(project_file).is_file() else []
    return near + [packaged]


def _host(data: dict[str, Any]) -> str:
    host = data.get("host")
    if isinstance(host, dict):
        return ", ".join(f"{k} {v}" for k, v in host.items())
    return str(host) if host else "not recorded in the file"


def _rows(data: Any) -> list[dict[str, Any]]:
    """The generations table, checked: ValueError saying what is wrong."""
    rows = data.get("generations") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError("no non-empty 'generations' list")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or any(not isinstance(row.get(k), (int, float)) for k in FIELDS):
            raise ValueError(f"generations[{i}] lacks a number for one of {', '.join(FIELDS)}")
    return [{k: row[k] for k in FIELDS} for row in sorted(rows, key=lambda r: (r["real_fraction"], r["generation"]))]


def measurement(project_file: str | None, packaged: Path = PACKAGED) -> dict[str, Any]:
    """report["collapse"]: the first file found, read and checked, or why there is none."""
    looked = [str(p) for p in candidates(project_file, packaged)]
    for path in map(Path, looked):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            rows = _rows(data)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return {"file": str(path), "looked": looked, "why": f"{path} is not a usable measurement: {exc}"}
        return {"file": str(path), "looked": looked, "sha256": sha256_file(path), "host": _host(data), "generations": rows}
    return {"file": None, "looked": looked, "why": f"no measurement: no {FILE} in {' or '.join(looked)}"}


def section(report: dict[str, Any]) -> dict[str, Any] | None:
    """report["collapse"] for a student of generation >= 2; None for any other build."""
    lineage = report.get("lineage")
    if not isinstance(lineage, dict) or lineage.get("generation", 0) < MIN_GENERATION:
        return None
    return measurement((report.get("project") or {}).get("file"))


def card_lines(report: dict[str, Any]) -> list[str]:
    """The model card's lines on the measured curve, next to the lineage warning (none below generation 2)."""
    found = report.get("collapse")
    lineage = report.get("lineage") or {}
    if lineage.get("generation", 0) < MIN_GENERATION:
        return []
    if not isinstance(found, dict):
        return ["**Model collapse, measured:** no measurement in this report (written by an edgekd without it; rebuild).", ""]
    if "generations" not in found:
        return [f"**Model collapse, measured:** {found['why']}.", ""]
    lines = [(f"**Model collapse, measured** (`{found['file']}`, sha256 `{found['sha256'][:12]}…`, host: {found['host']}): perplexity "
              "on real held-out text and output diversity (distinct-2) per generation of students trained on the previous "
              "generation's text, with a share of real text mixed in as the mitigation. This student is generation "
              f"{lineage['generation']}."), "", "| generation | real text fraction | perplexity | distinct-2 |", "|---|---|---|---|"]
    lines += [f"| {r['generation']}{' (this one)' if r['generation'] == lineage['generation'] else ''} | {r['real_fraction']:g} "
              f"| {r['perplexity']:.4g} | {r['distinct_2']:.4g} |" for r in found["generations"]]
    return lines + [""]
