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
    """Send `sig` to `proc` after a random number of its log lines (1..12) plus a random delay; returns its output.
    SIGKILL ends it (-9); SIGINT is edgekd's Ctrl-C: exit 130, "edgekd: aborted", no traceback. A build
    may also end normally (exit 0): it finished before the signal came, or Python dropped the
    KeyboardInterrupt because it landed in a destructor ("Exception ignored in"); the caller then finds
    a complete folder."""
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
    output = "".join(seen) + rest
    interrupted = -signal.SIGKILL if sig == signal.SIGKILL else 130
    assert proc.returncode in (interrupted, 0), f"seed {seed}: exit {proc.returncode} after {sig.name}:\n{output}"
    if proc.returncode == 130:
        assert "edgekd: aborted" in rest and "Traceback" not in rest.split("Exception ignored in")[0], f"seed {seed}:\n{output}"
    return output


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_changed_rebuild_leaves_no_stale_verdict(cold_build, cache_dir: Path, tmp_path: Path, sig: signal.Signals) -> None:
    assert cold_build.code == 0, cold_build.err
    seed = random.SystemRandom().randrange(1 << 30)
    width6 = project(tmp_path, 6 if sig == signal.SIGKILL else 5)  # each variant a change the shared cache has not seen
    fresh_cache = Path(shutil.copytree(cache_dir, tmp_path / "fresh-cache"))  # the uninterrupted build runs every changed stage itself
    folder = Path(shutil.copytree(cold_build.out_dir, tmp_path / "out"))

    proc = start(width6, folder, cache_dir)
    wait_for(folder / MARKER, proc)
    log = kill_at_random(proc, seed, sig)
    if not (folder / MARKER).exists():  # it got to the end before the signal took effect: a complete build of the change
        assert Path(verify(folder)["project"]["file"]).resolve() == width6.resolve(), f"seed {seed}:\n{log}"
    else:  # stopped mid-way: visibly incomplete, no report, and the gate refuses it
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
    same_engine = tuned(rebuilt) == tuned(reference)  # the tuner picks by timing: fp32 or int8 may win either build
    rebuilt_files = {name for s in rebuilt["stages"] for name in s["artefacts"]}
    assert files == rebuilt_files if same_engine else {n for n in files if not n.startswith("bundle/")} == {
        n for n in rebuilt_files if not n.startswith("bundle/")}
    compared = files - MEASURED if same_engine else {n for n in files - MEASURED if not n.startswith("bundle/")}
    assert {"student.safetensors", "student.onnx", "student_int8.onnx"} <= compared
    differ = [n for n in sorted(compared) if (folder / n).read_bytes() != (uninterrupted / n).read_bytes()]
    assert differ == [], f"seed {seed}: rebuilt files differ from an uninterrupted build's"
    assert not (folder / MARKER).exists()
