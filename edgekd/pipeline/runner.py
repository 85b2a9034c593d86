"""Walk a stage list it is given (edgekd.stages holds them; the runner knows no stage): cache look-up or run, copy artefacts to the build folder, check budgets,
stop at the first violated budget."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from edgekd.common.fsutil import atomic_copy, sha256_file
from edgekd.common.toolchain import edgekd_fingerprint, versions
from edgekd.pipeline import budgets
from edgekd.pipeline.cache import MANIFEST, StageCache, make_key
from edgekd.pipeline.context import EngineContext
from edgekd.pipeline.results import Metric, StageRecord
from edgekd.pipeline.stage import Stage
from edgekd.tasks.specs import ACCURACY, MetricSpec

Log = Callable[[str], None]


def stage_key(stage: Stage, ctx: EngineContext, inputs: dict[str, Path]) -> str:
    return make_key({
        "stage": stage.name,
        "edgekd": edgekd_fingerprint(),
        "inputs": {name: sha256_file(path) for name, path in sorted(inputs.items())},
        "config": stage.config(ctx),
        "toolchain": versions(stage.tools),
    })


def _run_stage(stage: Stage, ctx: EngineContext, inputs: dict[str, Path], cache: StageCache, key: str) -> dict[str, Any]:
    started = time.perf_counter()
    with cache.staging(stage.name, key) as scratch:
        outcome = stage.run(ctx, inputs, scratch)
        missing = [name for name in stage.outputs if not name.endswith("/") and not (scratch / name).is_file()]
        if missing:
            raise RuntimeError(f"stage {stage.name} did not write {missing}")
        manifest = {
            "stage": stage.name,
            "ran_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "seconds": time.perf_counter() - started,
            "metrics": {k: m.to_json() for k, m in outcome.metrics.items()},
            "notes": outcome.notes,
        }
        (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def clear_outputs(stage: Stage, out_dir: Path) -> None:
    """Remove what `stage` writes from the build folder, so that it shows this build only."""
    for name in stage.outputs:
        target = out_dir / name.rstrip("/")
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def plan(stages: tuple[Stage, ...], metric: MetricSpec = ACCURACY) -> list[dict[str, Any]]:
    """The stage list as data (for --dry-run): what each stage does, reads, writes and checks (the
    quality budgets of the task's `metric`)."""
    return [{"stage": s.name, "does": s.summary, "reads": list(s.inputs), "writes": list(s.outputs),
             "budgets": sorted({r.budget for r in budgets.rules(s.name, metric)})} for s in stages]


def run(ctx: EngineContext, cache: StageCache, out_dir: Path, force: bool = False, log: Log = print,
        until: str | None = None, *, stages: tuple[Stage, ...]) -> list[StageRecord]:
    """Every stage of `stages` in order (or up to and including `until`); returns one record per
    stage (`not run` after a violated budget)."""
    artefacts: dict[str, Path] = {}
    metrics: dict[str, Metric] = {}
    records: list[StageRecord] = []
    for index, stage in enumerate(stages, start=1):
        if any(r.failed for r in records):
            records.append(StageRecord(stage.name, "not run", notes=["stopped: an earlier stage broke its budget"]))
            continue
        inputs = {name.rstrip("?"): artefacts[name.rstrip("?")] for name in stage.inputs
                  if not name.endswith("?") or name.rstrip("?") in artefacts}  # "name?": only if an earlier stage wrote it
        key = stage_key(stage, ctx, inputs)
        manifest = None if force else cache.lookup(stage.name, key)
        status = "cached"
        if manifest is None:
            log(f"[{index}/{len(stages)}] {stage.name}: running - {stage.summary}")
            manifest, status = _run_stage(stage, ctx, inputs, cache, key), "ran"
        record = StageRecord(stage.name, status, key, manifest["seconds"], manifest["ran_at"],
                             metrics={k: Metric.from_json(v) for k, v in manifest["metrics"].items()}, notes=manifest["notes"])
        entry = cache.entry(stage.name, key)
        clear_outputs(stage, out_dir)
        for path in sorted(p for p in entry.rglob("*") if p.is_file() and p.name != MANIFEST):
            name = str(path.relative_to(entry))
            artefacts[name] = path
            atomic_copy(path, out_dir / name)
            record.artefacts[name] = {"file": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        metrics.update(record.metrics)
        record.verdicts = budgets.check(stage.name, metrics, ctx.profile.budgets, ctx.metric)
        record.notes = [*record.notes, *(n.describe() for n in budgets.not_applicable(stage.name, ctx.profile.budgets, ctx.metric))]
        records.append(record)
        outcome = "; ".join(f"{v.budget} {v.status}" for v in record.verdicts) or "no budgets"
        when = f"{record.seconds:.1f}s" if status == "ran" else f"cached (key {key[:12]}, ran {record.ran_at})"
        log(f"[{index}/{len(stages)}] {stage.name}: {when}; {outcome}")
        if stage.name == until:
            break
    return records
