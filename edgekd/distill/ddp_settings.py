"""What a distributed distillation run may train with: its validated settings and objective, and
whether every global batch splits over the processes. Checked in the parent, before torchrun starts."""
from __future__ import annotations

from typing import Any

from edgekd.errors import ConfigError


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
    epochs, lr, batch_size, seed). The objective is built here once, so a bad loss name or param is
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
    settings.pop("teacher_logit_cache", None)  # the frozen teacher's logits are always computed once here
    settings.pop("teacher_feature_cache_mb", None)  # and feature losses were refused above
    return settings

