"""A build folder (`--out`) is either a complete, consistent build or visibly incomplete.

A build holds the folder's lock (`.edgekd.lock`, edgekd.common.locks) while it writes, so builds
sharing one `--out` run one after the other. Before it writes anything it puts down the marker
`BUILDING.json` (who, when, which command) and removes the old report documents (report.json first):
from then on the folder says "incomplete" until the new report is written, last, and the marker is
removed after it. A build killed at any point leaves the marker (and no report); the next build
clears it. `verify` is what `edgekd gate` and `edgekd bench` trust a folder with: no marker, a
readable report.json, and every artefact it lists present with the recorded sha256."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from edgekd.common.fsutil import atomic_write_text, sha256_file
from edgekd.common.locks import exclusive, is_held, read_holder
from edgekd.errors import EdgekdError

Log = Callable[[str], None]

MARKER = "BUILDING.json"
LOCK_FILE = ".edgekd.lock"
REPORT_FILE = "report.json"
_REBUILD = "build again into this folder (edgekd build --out FOLDER)"
REPORT_DOCUMENTS = (REPORT_FILE, "report.md", "report.html", "MODEL_CARD.md")  # report.json first: the others are its views


class BuildFolderError(EdgekdError):
    """A build folder whose files do not match its report, or that a build did not finish (exit 2)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@contextmanager
def writing(out_dir: Path, log: Log | None = None) -> Iterator[None]:
    """Hold `out_dir`'s lock for the block (waiting, with one line to `log` naming the holder, while
    another process has it), with the marker down and the old report documents removed. The marker
    is removed only when the block ends without an error: write the report inside it, last."""
    out_dir = Path(out_dir)
    with exclusive(out_dir / LOCK_FILE, f"build folder {out_dir}", log or _stderr) as me:
        atomic_write_text(out_dir / MARKER, json.dumps(me, indent=1) + "\n")
        for name in REPORT_DOCUMENTS:
            (out_dir / name).unlink(missing_ok=True)
        yield
        (out_dir / MARKER).unlink()


@contextmanager
def updating(folder: Path, log: Log | None = None) -> Iterator[dict[str, Any]]:
    """Rewrite a finished build's report (`edgekd bench`): hold the folder's lock, verify the folder
    (BuildFolderError if it does not match its report), yield its report with the marker down; the
    marker goes when the block ends without an error (write the report documents inside it)."""
    folder = Path(folder)
    with exclusive(folder / LOCK_FILE, f"build folder {folder}", log or _stderr) as me:
        report = verify(folder)
        atomic_write_text(folder / MARKER, json.dumps(me, indent=1) + "\n")
        yield report
        (folder / MARKER).unlink()


def check_finished(folder: Path) -> None:
    """BuildFolderError when a build's marker is in `folder` (running now, or killed)."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        return
    holder = read_holder(marker) or {}
    state = "is still running" if is_held(Path(folder) / LOCK_FILE) else "did not finish"
    command = holder.get("command")
    command = " ".join(str(c) for c in command) if isinstance(command, list) else "?"
    raise BuildFolderError(f"{folder}: build incomplete: {marker} present (a build started at {holder.get('started_at', '?')} "
                           f"by pid {holder.get('pid', '?')} on host {holder.get('host', '?')} {state}; its command: {command})",
                           f"wait for that build, or build again into {folder}")


def listed_files(report: dict[str, Any], where: Path) -> dict[str, dict[str, Any]]:
    """Every artefact report.json records (`stages[].artefacts`), by its path in the folder."""
    stages = report.get("stages")
    if not isinstance(stages, list):
        raise BuildFolderError(f"{where}: not an edgekd build report (no 'stages' list)", _REBUILD)
    files: dict[str, dict[str, Any]] = {}
    for stage in stages:
        artefacts = stage.get("artefacts", {}) if isinstance(stage, dict) else None
        if not isinstance(artefacts, dict):
            raise BuildFolderError(f"{where}: a stage's 'artefacts' is not a table", _REBUILD)
        for name, entry in artefacts.items():
            file = entry.get("file", name) if isinstance(entry, dict) else None
            if not (isinstance(file, str) and isinstance(entry.get("sha256"), str)):
                raise BuildFolderError(f"{where}: artefact {name!r} has no file and sha256", _REBUILD)
            if PurePosixPath(file).is_absolute() or ".." in PurePosixPath(file).parts:
                raise BuildFolderError(f"{where}: artefact path {file!r} points outside the build folder", _REBUILD)
            files[file] = entry
    return files



def check_artefacts(folder: Path, report: dict[str, Any], *, alone_ok: bool = False) -> None:
    """BuildFolderError naming the first artefact of `report` that is missing from `folder` or
    differs from its recorded size or sha256. `alone_ok`: a report none of whose files is in
    `folder` is accepted as a report on its own (a CI baseline kept as a file)."""
    folder = Path(folder)
    files = listed_files(report, folder / REPORT_FILE)
    present = {name: (folder / name).is_file() for name in files}
    if alone_ok and not any(present.values()):
        return
    for name, entry in sorted(files.items()):
        path = folder / name
        if not present[name]:
            raise BuildFolderError(f"{path}: missing; {folder / REPORT_FILE} lists it (the build folder is incomplete)", _REBUILD)
        size = entry.get("bytes")
        if (isinstance(size, int) and path.stat().st_size != size) or sha256_file(path) != entry["sha256"]:
            raise BuildFolderError(f"{path}: does not match {folder / REPORT_FILE} (sha256 {entry['sha256'][:12]}... recorded; "
                                   "the file changed after the build wrote its report)", _REBUILD)


def read_report(folder: Path) -> dict[str, Any]:
    """`folder`'s report.json as a table, or BuildFolderError naming it."""
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        raise BuildFolderError(f"{folder} is not a build folder: no {REPORT_FILE} in it",
                               "give a folder written by `edgekd build` (or build into it again)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BuildFolderError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})", _REBUILD) from None
    if not isinstance(report, dict) or "schema_version" not in report:
        raise BuildFolderError(f"{path}: not an edgekd build report (no schema_version)", _REBUILD)
    return report


def verify(folder: Path) -> dict[str, Any]:
    """The report of build folder `folder` once it is shown finished and consistent: no marker, a
    readable report.json, every artefact it lists present with its recorded sha256."""
    check_finished(folder)
    report = read_report(folder)
    check_artefacts(folder, report)
    return report


def record_file(report: dict[str, Any], stage: str, folder: Path, name: str) -> None:
    """Record file `name` of `folder` (rewritten after the build, e.g. bench.json by `edgekd bench`)
    as an artefact of `stage` in `report`, with its new sha256 and size."""
    path = Path(folder) / name
    entry = next(s for s in report["stages"] if s["name"] == stage).setdefault("artefacts", {})
    entry[name] = {"file": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
