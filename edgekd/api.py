"""What the CLI calls, usable from Python: build(), and the target/profile listings."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekd.common.artefacts import STUDENT_JSON, STUDENT_WEIGHTS, TEACHER_WEIGHTS
from edgekd.common.factories import resolve
from edgekd.common.locks import exclusive
from edgekd.common.toolchain import version
from edgekd.config.loading import (
    ConfigSearch,
    Resolved,
    load_model,
    load_profile,
    load_project,
    load_target,
)
from edgekd.config.models import Profile
from edgekd.config.provenance import describe_overrides, settings
from edgekd.config.target import Target
from edgekd.errors import BudgetViolated, ConfigError, EdgekdError, ToolchainMissing
from edgekd.graph.model_file import check_model_file, has_external_data
from edgekd.pipeline.build_folder import LOCK_FILE
from edgekd.pipeline.cache import StageCache, default_root
from edgekd.pipeline.context import EngineContext
from edgekd.stages.compile_context import CompileData
from edgekd.stages.context import Context


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


class BuildFailed(BudgetViolated):
    """A budget broke; `.result` has the report that was written anyway."""

    def __init__(self, message: str, hint: str, result: BuildResult) -> None:
        super().__init__(message, hint)
        self.result = result


def _check_toolchain(target: Resolved[Target]) -> None:
    from packaging.version import Version

    for dist, minimum in target.config.toolchain.items():
        have = version(dist)
        if have == "absent" or Version(have) < Version(minimum):
            raise ToolchainMissing(f"target {target.name} ({target.path}) needs {dist} >= {minimum}, this environment has {have}",
                                   f"pip install '{dist}>={minimum}'")


def resolve_inputs(target: str, profile: str, project: Path | None, search: ConfigSearch) -> Context:
    """Load and cross-check the three inputs; nothing runs and nothing is written."""
    ctx = Context(load_project(project), load_target(target, search), load_profile(profile, search))
    try:
        ctx.project  # the profile's recipe applied to the project, validated again
    except ValueError as exc:
        raise ConfigError(f"{ctx.profile_file.path}: [recipe] does not fit project {ctx.source}: {exc}", "fix the recipe keys") from None
    ctx.quant_recipe  # e.g. 16-bit activations asked of a target that has none
    for role in ("teacher", "student", "data"):  # a factory that does not import fails here, before any work
        factory = getattr(ctx.project, role).factory
        if factory is not None:
            resolve(factory, f"{role}.factory", ctx.source)
    return ctx


def dry_run(ctx: Context) -> dict[str, Any]:
    from edgekd.pipeline.runner import plan
    from edgekd.stages import STAGES

    return {
        "project": {"file": str(ctx.project_file.path), "via": ctx.project_file.via, **ctx.project.model_dump()},
        "target": {"name": ctx.target_file.name, "file": str(ctx.target_file.path), "via": ctx.target_file.via, **ctx.target.model_dump()},
        "profile": {"name": ctx.profile_file.name, "file": str(ctx.profile_file.path), **ctx.profile.model_dump()},
        "plan": plan(STAGES, ctx.metric),
        "settings": settings(ctx.project_file, ctx.target_file, ctx.profile_file),  # where each value came from
    }


def build(target: str = "x86", profile: str = "default", project: Path | None = None, out: Path | None = None,
          targets_dirs: tuple[Path, ...] = (), profiles_dirs: tuple[Path, ...] = (), cache_dir: Path | None = None,
          force: bool = False, log: Callable[[str], None] = print) -> BuildResult:
    """Run every stage for `target` under `profile`; writes the build folder and its report.

    Raises BuildFailed (exit code 1) after writing the report when a budget breaks."""

    ctx = resolve_inputs(target, profile, project, ConfigSearch(tuple(targets_dirs), tuple(profiles_dirs)))
    _check_toolchain(ctx.target_file)
    ctx.data_sha256  # load and check the data before anything is written
    out_dir = Path(out) if out else Path("build") / ctx.target_file.name
    ctx.cache_root = Path(cache_dir or default_root())
    log(f"project {ctx.project.name} ({ctx.project_file.via}); target {ctx.target_file.name} ({ctx.target_file.via}); "
        f"profile {ctx.profile_file.name}; output {out_dir}")
    from edgekd.stages import STAGES
    from edgekd.stages.preflight import preflight

    for line in describe_overrides(ctx.project_file, ctx.profile_file):
        log(line)
    preflight(ctx, out_dir, log)  # everything that can be checked without training, before the first stage

    return _run(ctx, out_dir, cache_dir, force, log, STAGES)


def _run(ctx: EngineContext, out_dir: Path, cache_dir: Path | None, force: bool, log: Callable[[str], None],
         stages: tuple[Any, ...]) -> BuildResult:
    """Walk `stages` with the stage cache, write the report, raise BuildFailed on a broken budget.
    The folder is locked and marked incomplete until its report is written (edgekd.pipeline.build_folder)."""
    from edgekd.pipeline import build_folder
    from edgekd.pipeline import runner as pipeline
    from edgekd.report import build_report
    from edgekd.report.outputs import write_all

    ctx.cache_root = Path(cache_dir or default_root())
    with build_folder.writing(out_dir, log):
        records = pipeline.run(ctx, StageCache(ctx.cache_root), out_dir, force=force, log=log, stages=stages)
        for stage, record in zip(stages, records):  # the folder shows this build only
            if record.status == "not run":
                pipeline.clear_outputs(stage, out_dir)
        report = build_report.make(ctx, records, out_dir)
        write_all(out_dir, report)
    result = BuildResult(out_dir, report)
    if not result.passed:
        first = report["failed_budgets"][0]
        raise BuildFailed(f"budget violated after stage '{first['stage']}': {first['budget']} = {first['value']:.4g} {first['unit']}"
                          f" {'<' if first.get('floor') else '>'} {first['limit']:.4g} {first['unit']} (profile {ctx.profile_file.path})",
                          f"see {out_dir / 'report.md'}", result)
    return result


def compile_model(model: Path, target: str = "x86", profile: str = "default", out: Path | None = None,
                  shapes: dict[str, tuple[int, ...]] | None = None, data: CompileData = CompileData(),
                  search: ConfigSearch = ConfigSearch(), cache_dir: Path | None = None, force: bool = False,
                  log: Callable[[str], None] = print) -> BuildResult:
    """`edgekd compile`: quantize a trained ONNX model for `target`, check op support, build the
    engine, evaluate and bench it, with the same build folder, report, budgets and stage cache as
    `build` (edgekd.stages.import_model). Raises BuildFailed after writing the report when a budget breaks."""
    from edgekd.graph.quant_rules import has_qdq
    from edgekd.stages import COMPILE_STAGES
    from edgekd.stages.compile_context import compile_context

    model = check_model_file(model)
    if has_qdq(model):
        raise ConfigError(f"{model} is already quantized (it has QuantizeLinear/DequantizeLinear nodes)",
                          "give edgekd compile the float model: it quantizes for the target itself")
    if has_external_data(model):
        raise ConfigError(f"{model} keeps its weights in external data files; edgekd compile takes one self-contained .onnx",
                          "save it with onnx.save(model, path, save_as_external_data=False) (models under 2 GB)")
    resolved_target, resolved_profile = load_target(target, search), load_profile(profile, search)
    _check_toolchain(resolved_target)
    ctx = compile_context(model, resolved_target, resolved_profile, dict(shapes or {}), data)
    ctx.quant_recipe  # e.g. 16-bit activations asked of a target that has none
    out_dir = Path(out) if out else Path("build") / f"{ctx.name}-{resolved_target.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"model {model} ({ctx.model_inputs.describe()}); target {resolved_target.name} ({resolved_target.via}); "
        f"profile {resolved_profile.name}; output {out_dir}")
    return _run(ctx, out_dir, cache_dir, force, log, COMPILE_STAGES)


def list_configs(kind: str, search: ConfigSearch) -> list[dict[str, Any]]:
    """Every target or profile file on the search path; broken files are listed with their error."""
    model = Target if kind == "targets" else Profile
    rows = []
    for name, path in sorted(search.files(kind).items()):
        try:
            config, _ = load_model(path, model, kind[:-1])
        except EdgekdError as exc:
            rows.append({"name": name, "file": str(path), "error": str(exc)})
            continue
        row: dict[str, Any] = {"name": name, "file": str(path), "description": config.description}
        if isinstance(config, Target):
            row |= {"runtime": config.runtime, "aliases": config.aliases}
        rows.append(row)
    return rows


def show_config(kind: str, name: str, search: ConfigSearch) -> dict[str, Any]:
    resolved = load_target(name, search) if kind == "targets" else load_profile(name, search)
    return {"name": resolved.name, "file": str(resolved.path), "via": resolved.via, **resolved.config.model_dump()}


def _inputs(model: Path, shapes: dict[str, tuple[int, ...]] | None, batch: int = 1, static: bool = False) -> Any:
    from edgekd.graph.resolve import load_inputs

    return load_inputs(model, shapes, batch, static)


def check_model(model: Path, target: str, search: ConfigSearch, shapes: dict[str, tuple[int, ...]] | None = None,
                calib_dir: Path | None = None) -> dict[str, Any]:
    """Op support of an ONNX model on a target: per node where it runs, and the fallback shares.
    A float model checked for a target that runs only quantized graphs (QNN HTP) is quantized for it
    first, calibrated on `calib_dir` (named inputs) or generated feeds; the report says which."""
    from edgekd.analysis.support import analyze
    from edgekd.graph.feeds import load_feed_folder

    resolved = load_target(target, search)
    path = check_model_file(model)
    inputs = _inputs(path, shapes, static=resolved.config.runtime == "qnn-htp")  # the HTP runs static, non-empty shapes
    calib = load_feed_folder(calib_dir, inputs).arrays if calib_dir else None
    return analyze(path, resolved.name, resolved.config, inputs=inputs, calib=calib)


def estimate_model(model: Path, target: str, search: ConfigSearch, precision: str = "int8", batch: int = 1,
                   shapes: dict[str, tuple[int, ...]] | None = None, inputs: Any = None) -> dict[str, Any]:
    """Estimated latency of an ONNX model on a target from the target file's device figures, at the
    resolved input shapes (`shapes`: --shape overrides; `inputs`: already resolved)."""
    from edgekd.analysis.estimate import estimate_for_target

    resolved = load_target(target, search)
    path = check_model_file(model)
    return estimate_for_target(path, resolved, precision, batch, inputs or _inputs(path, shapes, batch))


def bench_here(path: Path, target: str | None, profile: str | None, search: ConfigSearch, threads: int | None = None,
               scenarios: list[str] | None = None, progress: Callable[[str, int], None] | None = None,
               shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Measure a build's engine or an ONNX model on this host (estimate it for device-only targets);
    a build folder's report takes the result as its latency."""
    from edgekd.perf.worker import bench_local, update_build_report

    result = bench_local(Path(path), target, profile, search, threads, scenarios, progress, shapes)
    if Path(path).is_dir():
        update_build_report(Path(path), result)
    return result


def bench_on_device(build_dir: Path, device: str, runs: int | None = None) -> dict[str, Any]:
    """Run the build's deploy bundle on a device (ssh://, adb://, local://) and add the result to
    the build's report.json / report.md as measured on that device."""
    from edgekd.pipeline import build_folder
    from edgekd.remote.bench import bench_on_device as run_remote
    from edgekd.report.outputs import write_all

    build_folder.verify(Path(build_dir))  # a folder whose files do not match its report is refused before the device run
    result = run_remote(build_dir, device, runs)
    with build_folder.updating(Path(build_dir)) as report:
        report.setdefault("device_results", []).append(result)
        write_all(Path(build_dir), report)
    return result


def distill_ddp(nproc: int, target: str = "x86", profile: str = "default", project: Path | None = None, out: Path | None = None,
                cache_dir: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Distill the project's student on `nproc` processes (torchrun, DDP: gloo on CPU, nccl on GPU):
    the search and teacher stages run (or come from the cache) as in `build`, then the distill step
    runs data-parallel on the project's data, task and augmentations, reading the teacher's logits
    from the build's teacher-logit cache, and writes `student.safetensors` into `out`."""
    ctx = resolve_inputs(target, profile, project, ConfigSearch())
    _check_ddp_recipe(ctx)
    ctx.data_sha256  # load and check the data before anything is written
    out_dir = Path(out) if out else Path("build") / f"{ctx.target_file.name}-ddp"
    ctx.cache_root = Path(cache_dir or default_root())
    from edgekd.stages.preflight import preflight

    preflight(ctx, out_dir, log)
    with exclusive(out_dir / LOCK_FILE, f"build folder {out_dir}", log):  # one writer per folder, as for build
        return _distill_locked(ctx, nproc, out_dir, log)


def _check_ddp_recipe(ctx: Context) -> None:
    """What the distributed workers do not run is refused before the teacher stage, not silently replaced."""
    from edgekd.distill.ddp_settings import refuse_lm_recipes

    refuse_lm_recipes(ctx.project.distill.model_dump(), ctx.source)


def _distill_locked(ctx: Context, nproc: int, out_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from edgekd.distill.ddp import distill_distributed
    from edgekd.distill.ddp_settings import DistributedRun, Factory
    from edgekd.distill.provenance import weights_metadata
    from edgekd.pipeline import runner as pipeline
    from edgekd.stages import STAGES

    records = pipeline.run(ctx, StageCache(ctx.cache_root), out_dir, log=log, until="teacher", stages=STAGES)
    teacher = next(r for r in records if r.name == "teacher")
    weights = ctx.cache_root / "teacher" / teacher.cache_key / TEACHER_WEIGHTS
    choice = json.loads((out_dir / STUDENT_JSON).read_text())
    p = ctx.project
    if p.teacher.kind != "torch" or not weights.is_file():
        raise ConfigError(f"{ctx.source}: distributed distillation needs a torch teacher; this one is '{p.teacher.kind}'",
                          "use `edgekd build` (single process) for ONNX, logits-file and ensemble teachers")
    run = DistributedRun(
        student=Factory(choice["factory"], dict(choice["args"])), teacher=Factory(p.teacher.factory, dict(p.teacher.args)),
        teacher_weights=weights, data=p.data, distill=p.distill.model_dump(), nproc=nproc, out_weights=out_dir / STUDENT_WEIGHTS,
        workdir=out_dir / "ddp", task=p.task, data_dir=ctx.project_file.path.parent,
        logits_cache=ctx.cache_root / "teacher-logits",  # the build's: a DDP run and a build share the teacher's logits
        metadata=weights_metadata(ctx, f"distill (torchrun, {nproc} processes)"))
    return distill_distributed(run)


def write_teacher_logits(model: Path, out: Path, k: int, project: Path | None = None) -> dict[str, Any]:
    """Soft labels for the project's training split from an ONNX teacher, as a logits file
    (top-k + the rest's mass): what a party contributes to federated-style distillation without
    sharing data or model."""
    from edgekd.common.factories import call
    from edgekd.data import check_splits
    from edgekd.distill.logits_file import write_logits_file
    from edgekd.distill.teachers import OnnxTeacher

    resolved = load_project(project)
    cfg = resolved.config.data
    data = check_splits(call(cfg.factory, cfg.args, "data.factory", str(resolved.path)), f"{resolved.path}: data.factory '{cfg.factory}'")
    teacher = OnnxTeacher(check_model_file(model))
    written = write_logits_file(teacher.logits(data.train.x), out, k, data.train.sha256(), teacher.describe())
    return {"file": str(out), "samples": written.num_samples, "k": written.k, "num_classes": written.num_classes,
            "bytes": out.stat().st_size, "data_sha256": data.train.sha256()}
