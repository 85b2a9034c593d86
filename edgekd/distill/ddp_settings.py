"""What a distributed distillation run is given (`DistributedRun`) and may train with: its validated
settings and objective, its augmentations, and whether every global batch splits over the
processes. Checked in the parent, before torchrun starts."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.config.models import DataConfig, TaskConfig
from edgekd.errors import ConfigError

SOURCE = "edgekd distill"


@dataclass(frozen=True)
class Factory:
    """A model factory, "package.module:function" (None: the project has none, e.g. an ONNX teacher),
    and its args."""

    name: str | None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DistributedRun:
    """One distributed distillation (edgekd.distill.ddp.distill_distributed).

    `distill`: DistillConfig's fields; `data`: the project's [data] (factory or files, `augment`,
    `shuffle_buffer`), files relative to `data_dir`; `task`: the project's [task] (its dims come from
    the data, `args` override them); `logits_cache`: the teacher-logit cache folder (default
    `workdir/teacher-logits`; a build's is `<cache root>/teacher-logits`); `metadata`: the weights'
    safetensors header; `timeout_s`: torchrun and its workers are stopped past it."""

    student: Factory
    teacher: Factory
    teacher_weights: Path
    data: DataConfig
    distill: dict[str, Any]
    nproc: int
    out_weights: Path
    workdir: Path
    task: TaskConfig = field(default_factory=TaskConfig)
    data_dir: Path = field(default_factory=Path.cwd)
    logits_cache: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None


def check_batches(rows: int, batch_size: int, nproc: int) -> None:
    """Every global batch must give every process at least one row (fit takes rows rank::world)."""
    last = rows % batch_size
    if batch_size < nproc or 0 < last < nproc:
        small = batch_size if batch_size < nproc else last
        raise ConfigError(
            f"distill: a global batch of {small} rows cannot be split over {nproc} processes "
            f"({rows} training rows, batch_size {batch_size})",
            f"use batch_size >= {nproc} such that {rows} % batch_size is 0 or >= {nproc}, or fewer processes")


def objective_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """The DistillConfig `cfg`, validated, as the settings the workers use (losses, temperature, alpha,
    epochs, lr, warmup_ratio, batch_size, seed). The objective is built here once, so a bad loss name or param is
    a ConfigError before launch; losses that read features (fitnet, at) are refused: the workers run
    logit losses only (ce, kd, hinton, dkd, combined with weights)."""
    from pydantic import ValidationError

    from edgekd.config.models import DistillConfig
    from edgekd.distill.trainer import build_objective

    try:
        config = DistillConfig.model_validate(cfg)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "distill"
        raise ConfigError(f"distill config: key '{where}': {first['msg']}",
                          "give losses, temperature, alpha, epochs, lr, batch_size, seed (see DistillConfig)") from None
    objective = build_objective(config)
    layers = objective.student_layers() + objective.teacher_layers()
    if layers:
        names = "+".join(spec.name for spec in config.losses)
        raise ConfigError(f"distill config: distributed distillation runs logit losses only; losses {names} read the "
                          f"layers {', '.join(sorted(set(layers)))}", "drop the feature terms (fitnet, at), or distill in one process")
    settings = config.model_dump()
    refuse_lm_recipes(settings)
    for key in ("teacher_feature_cache_mb", *LM_RECIPES, "generate"):  # refused above, or not used by the workers
        settings.pop(key, None)
    return settings


LM_RECIPES = {"data": ("real", "data = 'teacher_generations' (sequence-level KD)"), "on_policy": (None, "[distill.on_policy]"),
              "vocab_alignment": ("none", "vocab_alignment")}  # key: (the value the workers run, what else is named)


def refuse_lm_recipes(distill: dict[str, Any], where: str = "distill config") -> None:
    """ConfigError for the language-model recipes the workers do not run (they would train on the
    real text with plain KD instead)."""
    used = [what for key, (default, what) in LM_RECIPES.items() if distill.get(key, default) != default]
    if used:
        raise ConfigError(f"{where}: distributed distillation does not run {', '.join(used)}",
                          "use `edgekd build` (single process) for these language-model recipes")


def check_run(run: DistributedRun) -> dict[str, Any]:
    """Everything about `run` that can be checked before launch (the settings, the factories, the
    teacher weights, the augmentations, the data and task, the batch split); returns the validated
    distill settings. Raises ConfigError (or DataError) naming the key."""
    from edgekd.common.factories import resolve
    from edgekd.data.augment import build_augment
    from edgekd.distill.ddp_data import open_data
    from edgekd.distill.streaming import count_samples

    if not isinstance(run.nproc, int) or isinstance(run.nproc, bool) or run.nproc < 1:
        raise ConfigError(f"distill: --nproc {run.nproc!r} is not a positive integer", "give 1 or more processes")
    settings = objective_settings(run.distill)
    for key, factory in (("student.factory", run.student), ("teacher.factory", run.teacher)):
        if not isinstance(factory.name, str):  # e.g. an ONNX/logits teacher or a student search: no torch factory
            raise ConfigError(f"{SOURCE}: key '{key}' is {factory.name!r}; distributed distillation needs a torch factory",
                              f"set {key} = 'package.module:function'")
        resolve(factory.name, key, SOURCE)
    if not Path(run.teacher_weights).is_file():
        raise ConfigError(f"{SOURCE}: teacher weights {Path(run.teacher_weights).resolve()} not found",
                          "give the teacher's safetensors file")
    build_augment(run.data.augment)  # an unknown augmentation or bad params: data.augment[i], before launch
    source, _ = open_data(run.data.model_dump(mode="json"), str(Path(run.data_dir).resolve()), run.task.model_dump(), SOURCE)
    check_batches(count_samples(source), settings["batch_size"], run.nproc)
    return settings


def make_request(run: DistributedRun, settings: dict[str, Any]) -> dict[str, Any]:
    """The request JSON the workers read: everything as plain values, paths absolute."""
    workdir = Path(run.workdir).resolve()
    cache = Path(run.logits_cache).resolve() if run.logits_cache is not None else workdir / "teacher-logits"
    return {
        "student": {"factory": run.student.name, "args": run.student.args},
        "teacher": {"factory": run.teacher.name, "args": run.teacher.args, "weights": str(Path(run.teacher_weights).resolve())},
        "data": run.data.model_dump(mode="json"), "data_dir": str(Path(run.data_dir).resolve()),
        "task": run.task.model_dump(mode="json"), "logits_cache": str(cache), "distill": settings,
        "out_weights": str(Path(run.out_weights).resolve()), "workdir": str(workdir), "metadata": run.metadata,
        # the parent's import path, so that project factories importable here are importable there
        "sys_path": [os.path.abspath(p or os.curdir) for p in sys.path],
    }
