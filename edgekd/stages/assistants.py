"""Teacher-assistant chains (Mirzadeh et al., AAAI 2020): teacher -> assistant 1 -> ... -> student.
Each link is distilled from the previous one (Hinton KD, or the link's own `losses`: any
registered objective; feature losses name layers of the previous link and of this assistant) and
cached on its own (keyed by the previous link's identity, the link's settings, the data and the
toolchain), so changing the last assistant re-runs only that link."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.config.models import LossSpec
from edgekd.pipeline.cache import MANIFEST, StageCache, make_key
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage

if TYPE_CHECKING:
    import numpy as np

    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages.context import Context

LINK_STAGE = "assistant-link"  # cache folder of the links


def assistants_key(ctx: Context) -> dict[str, Any]:
    return {"assistants": [a.model_dump() for a in ctx.project.teacher.assistants],
            "distill": ctx.project.distill.model_dump(), "data": ctx.data_sha256}


def run_assistants(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.common.fsutil import sha256_file
    from edgekd.common.toolchain import versions
    from edgekd.distill.provenance import teacher_weights_metadata
    from edgekd.distill.sources import teacher_source
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import build_objective, distill, predict
    from edgekd.distill.weights import load_weights, save_weights
    from edgekd.stages.common import metric_key, quality_metric

    chain = ctx.project.teacher.assistants
    if not chain:
        (out / "assistant.json").write_text(json.dumps({"chain": []}))
        return Outcome({}, ["no teacher assistants: the student learns from the teacher"])
    cache, train, metrics, notes = StageCache(ctx.cache_root), ctx.data.train, {}, []
    previous = teacher_source(ctx, inputs.get("teacher.safetensors"))
    d = ctx.project.distill
    for i, link in enumerate(chain, start=1):
        cfg = d.model_copy(update={"epochs": link.epochs or d.epochs, "losses": link.losses or [LossSpec(name="hinton")]})
        objective = build_objective(cfg, key=f"teacher.assistants[{i - 1}].losses")
        key = make_key({"teacher": previous.identity(), "link": link.model_dump(), "distill": cfg.model_dump(),
                        "data": ctx.data_sha256, "toolchain": versions(("torch", "onnxruntime"))})
        module = ctx.build_model_from(link.factory, link.args, f"teacher.assistants[{i - 1}].factory", seed=cfg.seed)
        if cache.lookup(LINK_STAGE, key) is None:
            logits, features = _previous_outputs(ctx, previous, objective, i)
            with cache.staging(LINK_STAGE, key) as scratch:
                distill(module, train, cfg, objective, logits, getattr(previous, "module", None), teacher_features=features)
                save_weights(module, scratch / "assistant.safetensors", teacher_weights_metadata(ctx, i))
                (scratch / MANIFEST).write_text(json.dumps({"link": i}))
            terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
            notes.append(f"assistant {i} {link.factory}({link.args}): distilled from {previous.describe()}, {cfg.epochs} epochs, {terms}")
        else:
            notes.append(f"assistant {i} {link.factory}({link.args}): cached (key {key[:12]})")
        weights = cache.entry(LINK_STAGE, key) / "assistant.safetensors"
        load_weights(module, weights, f"assistant {i}")
        metrics[metric_key(ctx, f"assistant{i}")] = quality_metric(ctx, predict(module, ctx.data.test.x), f"torch eager, assistant {i}")
        previous = TorchTeacher(module, sha256_file(weights), f"torch module {link.factory}({link.args}), assistant {i}")
    save_weights(previous.module, out / "assistant.safetensors", teacher_weights_metadata(ctx, len(chain)))
    last = chain[-1]
    (out / "assistant.json").write_text(json.dumps({"chain": [a.model_dump() for a in chain], "factory": last.factory, "args": last.args}))
    metrics["assistants"] = Metric(len(chain), "", "measured", "links between the teacher and the student")
    return Outcome(metrics, notes)


def _previous_outputs(ctx: Context, previous: TeacherSource, objective: CombinedLoss,
                      link: int) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
    """The previous link's cached logits (when the link's losses read them) and cached features
    (when they read layers and fit the feature-cache limit; else None and distill runs it every step)."""
    from edgekd.distill.feature_cache import features_for_training
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.errors import ConfigError

    train, cfg, layers = ctx.data.train, ctx.project.distill, objective.teacher_layers()
    if layers and not previous.has_features:
        raise ConfigError(f"{ctx.source}: key 'teacher.assistants[{link - 1}].losses': feature losses need a torch teacher, "
                          f"and the previous link is {previous.describe()}", "use logit losses (kd, hinton, dkd) for this link")
    logits = None
    if objective.needs_teacher_logits():
        logits, _ = cached_teacher_logits(previous, train.x, ctx.cache_root / "teacher-logits", train.sha256(), None)
    features = features_for_training(previous, train, layers, cfg, ctx.cache_root)[0] if layers else None  # type: ignore[arg-type]
    return logits, features


ASSISTANTS = Stage("assistants", "teacher-assistant chain: each assistant distilled from the previous link (each link cached)",
                   ("teacher.json", "teacher.safetensors?"), ("assistant.json",), ("torch", "safetensors"), assistants_key, run_assistants)

