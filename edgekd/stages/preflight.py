"""Preflight: everything about a distillation build that can be checked without training, checked
before the first stage runs, so that a mistake costs seconds instead of a trained teacher.

- the output folder and the stage cache are writable and have room for the largest artefacts;
- thread counts of a target that runs here fit this host's cores;
- every split streams, with finite inputs and labels in range (edgekd.data.audit), with a warning
  for degenerate labels (one class, or classes the train split never shows);
- the loss names, their parameters and the feature layers they name (edgekd.distill.trainer);
- the teacher and the student build (factories return torch modules), and one batch of the train
  split goes through both with the outputs the task expects: the same number of classes (or
  vocabulary) as the data, the teacher's and the student's alike.

Each failure is a user error (exit 2) naming the input. What passed is remembered in the stage cache
under a key of everything it checked (`preflight/<key>.json`), so a rebuild does not pay for it again.
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgekd.common.blame import user_code
from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import edgekd_fingerprint
from edgekd.data import audit
from edgekd.distill.sources import teacher_files
from edgekd.errors import ConfigError
from edgekd.pipeline.cache import make_key

if TYPE_CHECKING:
    import torch

    from edgekd.stages.context import Context

PROBE_ROWS = 4
MIN_FREE_BYTES = 64 << 20  # room for reports, ONNX files and the engine of a small model
BYTES_PER_PARAM = 4 * 8  # fp32 weights written ~8 times over (checkpoints, ONNX fp32/int8, engine, bundle, cache copies)


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: Path, what: str) -> None:
    """`folder` (or, while it does not exist, the nearest folder above it) takes a new entry; else a
    ConfigError naming it. Nothing is left behind: a folder that did not exist still does not."""
    existing = _nearest_existing(folder)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        probe = existing / f".edgekd-write-test-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        probe.rmdir()
        if not folder.exists():
            folder.mkdir(parents=True)  # the whole path must be creatable (names not too long, no file in the way)
            _remove_created(folder, existing)
    except OSError as exc:
        raise ConfigError(f"{what} {folder} is not writable: {exc.strerror or exc}",
                          "give a folder you can write to (--out, --cache-dir or $EDGEKD_CACHE_DIR)") from None


def _remove_created(folder: Path, existing: Path) -> None:
    """Remove the empty folders from `folder` up to (not including) `existing`."""
    while folder != existing:
        folder.rmdir()
        folder = folder.parent


def check_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(_nearest_existing(folder)).free
    if free < needed:
        raise ConfigError(f"{what} {folder} has {free / 2**20:.0f} MiB free; this build needs about {needed / 2**20:.0f} MiB",
                          "free space there, or point it at another file system")


def _named(ctx: Context, check: Callable[[], Any]) -> Any:
    """`check()`, its ConfigError prefixed with the project file when it does not name it."""
    return _prefixed(ctx.source, check)


def _prefixed(prefix: str, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except ConfigError as exc:
        if str(exc).startswith(prefix):
            raise
        raise ConfigError(f"{prefix}: {exc}", exc.hint) from None


def _module(value: Any, role: str, ctx: Context) -> torch.nn.Module:
    from torch import nn

    if not isinstance(value, nn.Module):
        factory = getattr(ctx.project, role).factory
        raise ConfigError(f"{ctx.source}: key '{role}.factory' = '{factory}' returned {type(value).__name__}, not a torch.nn.Module",
                          "return the model itself (an nn.Module), e.g. `return MyNet(**args)`")
    return value


def _outputs(ctx: Context, role: str, run: Callable[[], Any], batch: dict[str, Any]) -> int:
    """The width of the task's KD view of `run()`'s outputs (classes, or vocabulary)."""
    import torch

    factory = getattr(ctx.project, role).factory or ("hf" if getattr(ctx.project, role).hf else ctx.project.teacher.kind)
    what = f"{ctx.source}: the {role} ({factory}) on one batch of the train split"
    with torch.no_grad(), user_code(what):
        out = run()
    if not isinstance(out, torch.Tensor):
        out = torch.as_tensor(out) if hasattr(out, "__array__") else out
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"{what} returned {type(out).__name__}, not a logits tensor",
                          "forward must return the logits (a tensor), or an object with a .logits tensor")
    try:
        view = ctx.task.kd_view(out.float(), batch)
    except (ValueError, RuntimeError, IndexError) as exc:
        raise ConfigError(f"{what} returned logits of shape {list(out.shape)}, which task {ctx.task.name} cannot use ({exc})",
                          "the model's output must be the task's logits") from None
    return int(view.shape[-1])


def check_models(ctx: Context) -> tuple[int, list[str]]:
    """Losses and layers, the teacher and the student on one batch, output widths against the task;
    returns the bytes the build's largest artefacts need (weights written several times over, and
    the teacher-logit cache) and warnings. Global RNG states are left as they were."""
    import numpy as np
    import torch

    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            return _check_models(ctx)
        finally:
            np.random.set_state(state)


def _check_models(ctx: Context) -> tuple[int, list[str]]:
    from edgekd.data.views import teacher_view
    from edgekd.distill.features import FeatureCapture
    from edgekd.distill.sources import teacher_source
    from edgekd.distill.streaming import first_batch
    from edgekd.distill.trainer import build_objective, to_tensors

    objective = _named(ctx, lambda: build_objective(ctx.project.distill))
    _named(ctx, lambda: _check_tokenizers(ctx))
    batch = to_tensors(first_batch(ctx.data_source, PROBE_ROWS))
    expected = getattr(ctx.task, "classes", None) or getattr(ctx.task, "vocab_size", None)
    cfg = ctx.project.teacher
    widths: dict[str, int] = {}
    params, warnings = 0, []
    if cfg.kind == "torch" and cfg.train is not None:
        teacher = _module(ctx.build_model("teacher"), "teacher", ctx)
        teacher_run: Callable[[], Any] = lambda: ctx.task.forward(teacher.eval(), teacher_view(batch))  # noqa: E731
    else:
        source = teacher_source(ctx, None)
        teacher = getattr(source, "module", None)
        outputs = getattr(source, "output_names", [])
        if len(outputs) > 1:
            warnings.append(f"{ctx.source}: the ONNX teacher has {len(outputs)} outputs ({', '.join(outputs)}); "
                            f"edgekd takes the first, '{outputs[0]}', as its logits")
        numpy_batch = {k: v.numpy() for k, v in batch.items()}
        teacher_run = lambda: source.logits(numpy_batch)  # noqa: E731
    _named(ctx, lambda: _check_on_policy(ctx, objective, None if cfg.kind == "torch" and cfg.train is not None else source))
    if teacher is not None:
        _named(ctx, lambda: FeatureCapture(teacher, objective.teacher_layers(), source="teacher"))
        params += sum(p.numel() for p in teacher.parameters())
    widths["teacher"] = _outputs(ctx, "teacher", teacher_run, batch)
    if ctx.project.student.search is None:
        student = _module(ctx.build_model("student"), "student", ctx)
        _named(ctx, lambda: FeatureCapture(student, objective.student_layers(), source="student"))
        params += sum(p.numel() for p in student.parameters())
        widths["student"] = _outputs(ctx, "student", lambda: ctx.task.forward(student.eval(), batch), batch)
    for role, width in widths.items():
        if expected is not None and width != expected:
            raise ConfigError(f"{ctx.source}: the {role} outputs {width} classes (logits width) but task {ctx.task.name} has {expected} "
                              f"(from the data)", f"make the {role} output {expected}: set its args (e.g. num_classes) or [task] args")
    samples = ctx.data_source.num_samples("train") or 0
    return MIN_FREE_BYTES + BYTES_PER_PARAM * params + 4 * samples * widths["teacher"] * _rows_per_sample(ctx, batch), warnings


def _check_on_policy(ctx: Context, objective: Any, source: Any) -> None:
    """[distill.on_policy] settings that cannot work (edgekd.distill.on_policy), before any training; with the
    teacher's source also whether that teacher can score the student's text (a trained torch teacher can)."""
    from edgekd.distill.on_policy import check_on_policy, check_on_policy_settings

    cfg = ctx.project.distill.on_policy
    if cfg is None:
        return
    if source is None:
        check_on_policy_settings(cfg, ctx.task, objective)
    else:
        check_on_policy(cfg, ctx.task, source, objective)


def _check_tokenizers(ctx: Context) -> None:
    """Hugging Face model folders with their own tokenizer read the data's token ids."""
    from edgekd.distill import hf_models

    tokenizer = getattr(ctx.data_source, "tokenizer", None)
    for role in ("teacher", "student"):
        spec = getattr(ctx.project, role)
        if tokenizer is not None and spec.hf is not None and spec.hf.path is not None:
            alignment = ctx.project.distill.vocab_alignment if role == "teacher" else "none"
            hf_models.check_tokenizer(ctx.factory_of(spec, role)[1]["spec"], tokenizer.get_vocab(), str(ctx.project.data.tokenizer),
                                      alignment)


def _rows_per_sample(ctx: Context, batch: dict[str, Any]) -> int:
    """KD rows per sample (1 for classifiers, the scored tokens for language models)."""
    rows = len(ctx.task.kd_labels(batch))
    return max(1, -(-rows // len(batch["index"])))


def _key(ctx: Context) -> str:
    return make_key({"project": ctx.project.model_dump(), "files": teacher_files(ctx), "data": ctx.data_sha256,
                     "edgekd": edgekd_fingerprint()})


def check_host_settings(ctx: Context) -> None:
    """Thread counts of a target that runs here ([session], [tune] candidates) fit this host's cores."""
    if ctx.target.runtime != "onnxruntime-cpu":
        return
    from edgekd.backends.ort.session import check_session_threads
    from edgekd.common.host import check_threads

    where = f"target {ctx.target_file.name} ({ctx.target_file.path})"
    _prefixed(where, lambda: check_session_threads(ctx.target.session))
    for n in ctx.target.tune.intra_op_num_threads:
        _prefixed(where, lambda: check_threads(n, "[tune] intra_op_num_threads"))


def preflight(ctx: Context, out_dir: Path, log: Callable[[str], None]) -> None:
    """Every check above, before any stage runs; the model and data checks once per key."""
    check_host_settings(ctx)
    check_writable(out_dir, "output folder (--out)")
    check_writable(ctx.cache_root, "stage cache")
    marker = ctx.cache_root / "preflight" / f"{_key(ctx)}.json"
    try:
        found = json.loads(marker.read_text())
        warnings, needed = list(found["warnings"]), int(found["needed_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        classes = getattr(ctx.task, "classes", None)
        warnings = audit.check(ctx.data_source, classes, f"{ctx.source}: data")
        needed, found_warnings = check_models(ctx)
        warnings += found_warnings
        atomic_write_text(marker, json.dumps({"warnings": warnings, "needed_bytes": needed}))
    for warning in warnings:
        log(f"warning: {warning}")
    check_space(out_dir, min(needed, 4 * MIN_FREE_BYTES), "output folder (--out)")  # the build folder holds no caches
    check_space(ctx.cache_root, needed, "stage cache")
