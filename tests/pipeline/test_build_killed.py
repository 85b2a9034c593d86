"""Fault injection: a changed rebuild (student width 8 -> 6) over an existing build folder, killed
with SIGKILL or SIGINT (Ctrl-C) at a random point, leaves a folder the gate refuses (never the old PASS report beside
new files); the next build clears it, and its artefacts are byte-identical to an uninterrupted
build's, with the same verdict. The seed of the kill point is in every assertion message."""
from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from build_processes import project, run, start, wait_for
from helpers import run_cli

from edgekd.pipeline.build_folder import MARKER, REPORT_DOCUMENTS, verify

pytestmark = pytest.mark.slow
# measured latencies, and what the x86 compile stage's timing-based tuning chose and ORT saved: not reproducible bytes
MEASURED = {"bench.json", "engine.json", "engine/engine.onnx"}


def tuned(report: dict) -> dict:
    """The engine variant and session settings the compile stage's tuning chose (by measuring them)."""
    row = report["tuning"]["rows"][report["tuning"]["chosen"]]
    return {"variant": row["variant"], "session": row["session"]}


def kill_at_random(proc, seed: int, sig: signal.Signals = signal.SIGKILL) -> str:
    """Send `sig` to `proc` after a random number of its log lines (1..12) plus a random delay; returns its output."""
    rng = random.Random(seed)
    lines_before, delay = rng.randint(1, 12), rng.uniform(0.0, 1.0)
    seen = []
    while len(seen) < lines_before:
        line = proc.stdout.readline()
        assert line, f"seed {seed}: the build ended after {len(seen)} lines: {''.join(seen)}"
        seen.append(line)
    time.sleep(delay)
    proc.send_signal(sig)
    rest = proc.communicate()[0] or ""
    expected = -signal.SIGKILL if sig == signal.SIGKILL else 130  # Ctrl-C: edgekd exits 130
    assert proc.returncode == expected, f"seed {seed}: exit {proc.returncode} after {sig.name}:\n{''.join(seen)}{rest}"
    if sig != signal.SIGKILL:
        assert "Traceback" not in rest and "edgekd: aborted" in rest, f"seed {seed}:\n{rest}"
    return "".join(seen) + rest


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_changed_rebuild_leaves_no_stale_verdict(cold_build, cache_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    assert cold_build.code == 0, cold_build.err
    seed = random.SystemRandom().randrange(1 << 30)
    width6 = project(tmp_path, 6)
    fresh_cache = Path(shutil.copytree(cache_dir, tmp_path / "fresh-cache"))  # the uninterrupted build runs every changed stage itself
    folder = Path(shutil.copytree(cold_build.out_dir, tmp_path / "out"))

    proc = start(width6, folder, cache_dir)
    wait_for(folder / MARKER, proc)
    log = kill_at_random(proc, seed, sig)
    assert not any((folder / name).exists() for name in REPORT_DOCUMENTS), f"seed {seed}: a report survived:\n{log}"
    code, _, err = run_cli(["gate", str(folder), "--baseline", str(cold_build.out_dir)], cache_dir)
    assert code == 2 and f"build incomplete: {folder / MARKER} present" in err and "did not finish" in err, f"seed {seed}: {err}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err

    code, log = run(width6, folder, cache_dir)  # the next build clears what the killed one left
    assert code in (0, 1), f"seed {seed}:\n{log}"
    uninterrupted = tmp_path / "uninterrupted"
    code_u, log_u = run(width6, uninterrupted, fresh_cache)
    assert code_u == code, f"seed {seed}:\n{log_u}"
    rebuilt, reference = verify(folder), verify(uninterrupted)
    assert rebuilt["verdict"] == reference["verdict"] and rebuilt["project"] == reference["project"]
    files = {name for s in reference["stages"] for name in s["artefacts"]}
    assert files == {name for s in rebuilt["stages"] for name in s["artefacts"]}
    compared = files - MEASURED if tuned(rebuilt) == tuned(reference) else {n for n in files - MEASURED if not n.startswith("bundle/")}
    assert {"student.safetensors", "student.onnx", "student_int8.onnx"} <= compared
    differ = [n for n in sorted(compared) if (folder / n).read_bytes() != (uninterrupted / n).read_bytes()]
    assert differ == [], f"seed {seed}: rebuilt files differ from an uninterrupted build's"
    assert not (folder / MARKER).exists()
