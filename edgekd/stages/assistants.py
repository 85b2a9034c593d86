"""Teacher-assistant chains (Mirzadeh et al., AAAI 2020): teacher -> assistant 1 -> ... -> student.
Each link is distilled from the previous one (Hinton KD, or the link's own `losses`: any
registered objective; feature losses name layers of the previous link and of this assistant) and
cached on its own (keyed by the previous link's identity, the link's settings, the data, the
augmentations and the toolchain), so changing the last assistant re-runs only that link."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.config.models import LossSpec
from edgekd.pipeline.cache import MANIFEST, StageCache, make_key
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage

if TYPE_CHECKING:
    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.teachers import TeacherSource
    from edgekd.distill.teaching import Teaching
    from edgekd.stages.context import Context

LINK_STAGE = "assistant-link"  # cache folder of the links


def assistants_key(ctx: Context) -> dict[str, Any]:
    return {"assistants": [a.model_dump() for a in ctx.project.teacher.assistants],
            "distill": ctx.project.distill.model_dump(), "data": ctx.data_sha256, **ctx.augment_key()}


def run_assistants(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.common.fsutil import sha256_file
    from edgekd.common.toolchain import versions
    from edgekd.distill.provenance import teacher_weights_metadata
    from edgekd.distill.sources import teacher_source
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import build_objective, distill
    from edgekd.distill.weights import load_weights, save_weights
    from edgekd.stages.common import metric_key, quality_metric

    chain = ctx.project.teacher.assistants
    if not chain:
        (out / "assistant.json").write_text(json.dumps({"chain": []}))
        return Outcome({}, ["no teacher assistants: the student learns from the teacher"])
    cache, metrics, notes = StageCache(ctx.cache_root), {}, []
    previous = teacher_source(ctx, inputs.get("teacher.safetensors"))
    d = ctx.project.distill
    for i, link in enumerate(chain, start=1):
        cfg = d.model_copy(update={"epochs": link.epochs or d.epochs, "losses": link.losses or [LossSpec(name="hinton")]})
        objective = build_objective(cfg, key=f"teacher.assistants[{i - 1}].losses")
        key = make_key({"teacher": previous.identity(), "link": link.model_dump(), "distill": cfg.model_dump(),
                        "data": ctx.data_sha256, "toolchain": versions(("torch", "onnxruntime")), **ctx.augment_key()})
        module = ctx.build_model_from(link.factory, link.args, f"teacher.assistants[{i - 1}].factory", seed=cfg.seed)
        if cache.lookup(LINK_STAGE, key) is None:
            teaching = _previous_outputs(ctx, previous, objective, i)
            with cache.staging(LINK_STAGE, key) as scratch:
                distill(module, ctx.train_data, cfg, objective, teaching)
                save_weights(module, scratch / "assistant.safetensors", teacher_weights_metadata(ctx, i))
                (scratch / MANIFEST).write_text(json.dumps({"link": i}))
            terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
            notes.append(f"assistant {i} {link.factory}({link.args}): distilled from {previous.describe()} ({teaching.note}), "
                         f"{cfg.epochs} epochs, {terms}")
        else:
            notes.append(f"assistant {i} {link.factory}({link.args}): cached (key {key[:12]})")
        weights = cache.entry(LINK_STAGE, key) / "assistant.safetensors"
        load_weights(module, weights, f"assistant {i}")
        metrics[metric_key(ctx, f"assistant{i}")] = quality_metric(ctx, ctx.task.predict(module, ctx.eval_feeds.arrays),
                                                                   f"torch eager, assistant {i}")
        previous = TorchTeacher(module, sha256_file(weights), f"torch module {link.factory}({link.args}), assistant {i}", task=ctx.task)
    save_weights(previous.module, out / "assistant.safetensors", teacher_weights_metadata(ctx, len(chain)))
    last = chain[-1]
    (out / "assistant.json").write_text(json.dumps({"chain": [a.model_dump() for a in chain], "factory": last.factory, "args": last.args}))
    metrics["assistants"] = Metric(len(chain), "", "measured", "links between the teacher and the student")
    return Outcome(metrics, notes)


def _previous_outputs(ctx: Context, previous: TeacherSource, objective: CombinedLoss, link: int) -> Teaching:
    """What the link learns from, as the distill stage decides it (edgekd.distill.teaching.plan_teaching):
    the previous link's cached logits and features where distill.teacher_logit_cache and the
    feature-cache limit allow them, else the previous link every step; with augmentation, the
    previous link every step on the augmented batch."""
    from edgekd.distill.teaching import plan_teaching
    from edgekd.errors import ConfigError

    if objective.teacher_layers() and not previous.has_features:
        raise ConfigError(f"{ctx.source}: key 'teacher.assistants[{link - 1}].losses': feature losses need a torch teacher, "
                          f"and the previous link is {previous.describe()}", "use logit losses (kd, hinton, dkd) for this link")
    return plan_teaching(previous, ctx.train_data, objective, ctx.project.distill, ctx.cache_root)


ASSISTANTS = Stage("assistants", "teacher-assistant chain: each assistant distilled from the previous link (each link cached)",
                   ("teacher.json", "teacher.safetensors?"), ("assistant.json",), ("torch", "safetensors"), assistants_key, run_assistants)

