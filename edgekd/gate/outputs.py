"""Writing the gate's files: all rendered first, each written whole (temp file + rename) or not at all."""
from __future__ import annotations

import json
from pathlib import Path

from edgekd.common.fsutil import atomic_write_text
from edgekd.errors import EdgekdError
from edgekd.gate import junit, markdown
from edgekd.gate.run import GateResult


def write_outputs(result: GateResult, markdown_file: Path | None = None, junit_file: Path | None = None,
                  json_file: Path | None = None) -> list[Path]:
    """Write the asked-for files; returns their paths. An unwritable path is a one-line error (exit 2)."""
    texts = {markdown_file: markdown.render(result), junit_file: junit.render(result),
             json_file: json.dumps(result.to_json(), indent=1) + "\n"}
    written = []
    for path, text in texts.items():
        if path is None:
            continue
        if path.is_dir():
            raise EdgekdError(f"output {path} is a folder", "give a file path for --markdown/--junit")
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise EdgekdError(f"cannot write {path} ({exc.strerror})", "check that its folder is writable") from None
        written.append(path)
    return written
