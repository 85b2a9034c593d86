"""Sequence-level KD (Kim & Rush 2016): with [distill] data = "teacher_generations" the student's
train split is the teacher's sequences instead of the real text: a local teacher's generations made
by edgekd (edgekd.distill.generation, cached by edgekd.distill.generation_cache), or an API teacher's
responses (edgekd.distill.api_teacher); [distill.generate] real_fraction of the rows are real train
blocks. The loss is on the teacher's tokens only (prompt positions -100); token-level losses
(kd, hinton, forward_kl, ...) still apply on top with a local teacher, whose logits over the
generated rows are cached like any train split's; with an API teacher only `topk_kd` reads its
top-k log-probabilities. The calib and test splits stay the real ones: evaluation is on real text.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.distill.streaming import TRAIN, TrainData, count_samples
from edgekd.errors import ConfigError, DataError
from edgekd.pipeline.results import Metric

if TYPE_CHECKING:
    from edgekd.distill.api_teacher import ApiTeacher
    from edgekd.distill.loss_base import CombinedLoss
    from edgekd.distill.sequence_data import Rows
    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages.context import Context

KEY = "distill.data"
KIM_RUSH = "sequence-level KD, Kim & Rush 2016"
SPARSE_LOSS = "topk_kd"


@dataclass(frozen=True)
class StudentData:
    """What the student trains on, and what the stage says about it."""

    data: TrainData
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Metric] = field(default_factory=dict)


def student_data(ctx: Context, teacher: TeacherSource, objective: CombinedLoss) -> StudentData:
    """The student's training data under [distill] data (see the module docstring)."""
    from edgekd.distill.api_teacher import ApiTeacher
    from edgekd.distill.sequence_data import (
        SequenceSource,
        concatenate,
        real_count,
        real_rows,
    )

    cfg = ctx.project.distill
    if cfg.data == "real":
        return StudentData(ctx.train_data)
    if ctx.augment is not None:
        raise ConfigError(f"{ctx.source}: key '{KEY}': [data] augment changes real samples, and the student trains on the teacher's "
                          "sequences", "remove [data] augment, or set [distill] data = 'real'")
    if ctx.task.name != "causal-lm":
        raise ConfigError(f"{ctx.source}: key '{KEY}': teacher generations are for task causal-lm, not {ctx.task.name}",
                          "set [distill] data = 'real'")
    if isinstance(teacher, ApiTeacher):
        rows, notes, metrics = api_part(ctx, teacher, objective)
        origin = "API responses"
    else:
        rows, notes = generated_part(ctx, teacher)
        origin, metrics = "teacher generations", {}
    fraction = cfg.generate.real_fraction
    real = real_rows(ctx.data_source, real_count(len(rows), fraction, count_samples(ctx.data_source)), cfg.generate.seed)
    source = SequenceSource(ctx.data_source, concatenate(rows, real), len(rows), origin)
    notes.append(f"{KIM_RUSH}: the student trained on {len(rows)} {origin} + {len(real)} real train blocks "
                 f"(real_fraction {fraction:g}); loss on the teacher's tokens only (prompt positions -100); "
                 "evaluated on the real test split")
    return StudentData(TrainData(source, ctx.task, None), notes, metrics)


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(f"{array.dtype}{array.shape};".encode() + np.ascontiguousarray(array).tobytes()).hexdigest()


def block_prompts(ctx: Context, tokens: int) -> np.ndarray:
    """The first `tokens` tokens of every train block, in the split's natural order."""
    parts = [np.asarray(b["input_ids"], dtype=np.int64)[:, :tokens] for b in ctx.data_source.batches(TRAIN, 256)]
    return np.concatenate(parts)


def file_prompts(path: Path, tokenizer: Any, tokens: int) -> tuple[np.ndarray, int]:
    """(the first `tokens` tokens of each line with that many, the number of lines with fewer)."""
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    encoded = [ids[:tokens] for ids in tokenizer(lines)["input_ids"]] if lines else []
    kept = [ids for ids in encoded if len(ids) == tokens]
    if not kept:
        raise DataError(f"{path}: no prompt line has {tokens} tokens", "give longer prompts or lower distill.generate.prompt_tokens")
    return np.asarray(kept, dtype=np.int64), len(encoded) - len(kept)


def generated_part(ctx: Context, teacher: TeacherSource) -> tuple[Rows, list[str]]:
    """A local teacher's generations (from the cache, or made and cached) as training rows."""
    from edgekd.distill.generation import (
        check_settings,
        data_tokenizer,
        generate,
        specials_of,
    )
    from edgekd.distill.generation_cache import cached_generations
    from edgekd.distill.sequence_data import rows_of
    from edgekd.distill.sources import project_file

    gen, max_length = ctx.project.distill.generate, ctx.task.max_length
    check_settings(gen, max_length)
    tokenizer = data_tokenizer(ctx)
    specials = specials_of(tokenizer)
    if gen.prompts is not None:
        path = project_file(ctx, gen.prompts, "distill.generate.prompts")
        prompts, short = file_prompts(path, tokenizer, gen.prompt_tokens)
        where = f"prompts file {gen.prompts} ({short} lines shorter than {gen.prompt_tokens} tokens skipped)"
    else:
        prompts, where = block_prompts(ctx, gen.prompt_tokens), f"the first {gen.prompt_tokens} tokens of each train block"
    cached = cached_generations(teacher, gen, array_sha256(prompts), Path(ctx.cache_root) / "teacher-generations",
                                lambda: generate(teacher, prompts, gen, specials))
    g = cached.generated
    prompt_ends = np.full(g.count, g.prompt_tokens, dtype=np.int64)
    rows = rows_of(g.sequences, g.lengths, prompt_ends, max_length, specials.pad_id)
    how = "from the cache (made in an earlier build)" if cached.hit else "made now and cached"
    settings = ", ".join(f"{k} {v}" for k, v in cached.provenance["settings"].items() if v is not None)
    note = (f"teacher generations: {g.count} sequences from {len(prompts)} prompts ({where}), by {g.engine}; {how}: "
            f"{cached.path.name} (provenance beside it: teacher sha256 {cached.provenance['teacher_sha256'][:12]}…, seed {gen.seed}); "
            f"settings {settings}; mean length {float(g.lengths.mean()):.1f} tokens")
    return rows, [note]


def check_api_losses(ctx: Context, teacher: ApiTeacher, objective: CombinedLoss) -> None:
    """An API teacher has no logits: only topk_kd reads its top-k, and only where the file has them."""
    dense = [t.name for t in objective.terms if t.needs_teacher_logits() and t.name != SPARSE_LOSS]
    if dense:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': {', '.join(dense)} need the teacher's full logits, and an API "
                          "teacher gives at most its top-k log-probabilities", f"use '{SPARSE_LOSS}' (and 'ce') with an API teacher")
    if objective.needs_teacher_logits() and not teacher.has_logprobs:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': {SPARSE_LOSS} needs top_logprobs, and {teacher.describe()} maps none "
                          "onto the student's tokens", "use losses = [{name = 'ce'}] (sequence-level KD on the responses)")


def api_part(ctx: Context, teacher: ApiTeacher, objective: CombinedLoss) -> tuple[Rows, list[str], dict[str, Metric]]:
    """An API teacher's responses as rows; the mapping's dropped mass as metrics."""
    check_api_losses(ctx, teacher, objective)
    data, stats = teacher.data, teacher.data.stats
    notes = [(f"API teacher: {teacher.describe()}; {len(data.rows)} responses as training rows ({stats.truncated} cut at "
              f"max_length {ctx.task.max_length}, {stats.skipped} with no response token left)")]
    metrics: dict[str, Metric] = {}
    values = stats.metrics()
    if values["dropped_mass_mean"] is None:
        notes.append("no top_logprobs in the file: sequence-level KD on the responses only")
        return data.rows, notes, metrics
    how = (f"over the {stats.api_tokens} API response tokens with top_logprobs; the rule: edgekd.distill.api_teacher "
           "(first student token of each API token's span; alternatives to their first student token; renormalised)")
    metrics["api.dropped_mass_mean"] = Metric(values["dropped_mass_mean"], "", "measured",
                                              f"mean API probability per token dropped by the mapping onto the student's tokens, {how}")
    metrics["api.topk_mass_mean"] = Metric(values["topk_mass_mean"], "", "measured", f"mean API top-k probability mass per token, {how}")
    metrics["api.target_share"] = Metric(values["target_share"], "", "measured",
                                         f"share of the {stats.positions} student response positions with a top-k target")
    notes.append(f"API top-k mapped onto the student's tokens: {stats.targeted} of {stats.positions} response positions have a target "
                 f"({values['target_share']:.1%}); mean dropped mass {values['dropped_mass_mean']:.4f} of a top-k mass "
                 f"{values['topk_mass_mean']:.4f} per API token (the tail beyond the top-k is unknown)")
    return data.rows, notes, metrics
