"""The project's [teacher] table made into a teacher source (edgekd.distill.teachers): a torch
module with its weights (run through the project's task), an ONNX model, logits files (several:
aggregated, federated-style; tied to the train split's content hash), or a weighted ensemble of
those. Paths are relative to the project file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.config.models import TeacherSpec
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages.context import Context


def project_file(ctx: Context, relative: str, key: str) -> Path:
    path = ctx.resolve_path(relative)
    if not path.is_file():
        raise ConfigError(f"{ctx.source}: key '{key}': file {path} not found", "give the path relative to the project file")
    return path


def _one(ctx: Context, spec: TeacherSpec, key: str, weights: Path | None) -> TeacherSource:
    from edgekd.distill import teachers

    if spec.kind == "onnx":
        return teachers.OnnxTeacher(project_file(ctx, spec.onnx, f"{key}.onnx"))
    if spec.kind == "api":
        return api_teacher(ctx, spec, key)
    if spec.kind == "logits":
        from edgekd.distill.streaming import train_split_sha256

        train_sha = train_split_sha256(ctx.data_source)
        paths = [project_file(ctx, p, f"{key}.logits") for p in spec.logits]
        if len(paths) == 1:
            return teachers.LogitsFileTeacher(paths[0], train_sha)
        return teachers.EnsembleTeacher([(w, teachers.LogitsFileTeacher(p, train_sha))
                                         for w, p in zip(spec.logit_weights or [1.0] * len(paths), paths)])
    factory, args, factory_key = ctx.factory_of(spec, key)
    module = ctx.build_model_from(factory, args, factory_key)
    from edgekd.common.fsutil import sha256_bytes, sha256_file
    from edgekd.distill import hf_models
    from edgekd.distill.weights import load_weights

    if weights is None and spec.checkpoint is None:  # a Hugging Face folder's own weights
        if not hf_models.head_is_trained(args["spec"], ctx.task.name, getattr(ctx.task, "classes", None)):
            raise ConfigError(f"{ctx.source}: key '{key}.hf.path': the model in {args['spec']['path']} has no trained "
                              f"{ctx.task.name} head for this data's {getattr(ctx.task, 'classes', '?')} labels",
                              f"add [{key}.train] to fine-tune it here, or give a folder saved from the fine-tuned model")
        digest = sha256_bytes(json.dumps(args["spec"]["files"], sort_keys=True).encode())
        return teachers.TorchTeacher(module.eval(), digest, hf_models.describe(args["spec"]), task=ctx.task)
    source = weights if weights is not None else project_file(ctx, spec.checkpoint, f"{key}.checkpoint")
    load_weights(module, source, "teacher")
    what = hf_models.describe(args["spec"]) if factory == hf_models.FACTORY else f"torch module {spec.factory}({spec.args})"
    return teachers.TorchTeacher(module, sha256_file(source), what, task=ctx.task)


def api_teacher(ctx: Context, spec: TeacherSpec, key: str) -> TeacherSource:
    """An API teacher's responses file, tokenized with the data's tokenizer (edgekd.distill.api_teacher)."""
    from edgekd.distill.api_teacher import ApiTeacher
    from edgekd.distill.generation import data_tokenizer, specials_of

    if key != "teacher":
        raise ConfigError(f"{ctx.source}: key '{key}': an API teacher gives responses, not soft labels to average",
                          "use kind = 'api' as the one teacher, without [[teacher.members]]")
    tokenizer = data_tokenizer(ctx)
    task = ctx.task
    if not hasattr(task, "vocab_size") or not hasattr(task, "max_length"):
        raise ConfigError(f"{ctx.source}: key '{key}.kind': an API teacher teaches a causal-lm student, and the task is {task.name}",
                          "set [task] kind = 'causal-lm'")
    return ApiTeacher(project_file(ctx, spec.responses, f"{key}.responses"), tokenizer, task.max_length, task.vocab_size,
                      specials_of(tokenizer).pad_id)


def teacher_source(ctx: Context, trained_weights: Path | None) -> TeacherSource:
    """The configured teacher; `trained_weights` are the teacher stage's weights for a torch
    teacher trained here."""
    from edgekd.distill.teachers import EnsembleTeacher

    from edgekd.distill.vocab_align import aligned_source

    cfg = ctx.project.teacher
    if cfg.kind != "ensemble":
        return aligned_source(ctx, _one(ctx, cfg, "teacher", trained_weights))
    members = []
    for i, member in enumerate(cfg.members):
        if member.kind == "torch" and member.train is not None:
            raise ConfigError(f"{ctx.source}: key 'teacher.members[{i}]': ensemble members are trained elsewhere",
                              "give the member a 'checkpoint'")
        members.append((member.weight, _one(ctx, member, f"teacher.members[{i}]", None)))
    return EnsembleTeacher(members)


def teacher_files(ctx: Context) -> dict[str, Any]:
    """Content hashes of every file the teacher config names (for the cache key)."""
    from edgekd.common.fsutil import sha256_file

    cfg = ctx.project.teacher
    specs = [(f"teacher.members[{i}]", m) for i, m in enumerate(cfg.members)] or [("teacher", cfg)]
    hashes = {}
    for key, spec in specs:
        if getattr(spec, "hf", None) is not None and spec.hf.path is not None:
            hashes[f"{key}.hf.path"] = ctx.factory_of(spec, key)[1]["spec"]["files"]
        for field, names in (("checkpoint", [spec.checkpoint] if spec.checkpoint else []),
                             ("onnx", [spec.onnx] if spec.onnx else []), ("logits", spec.logits),
                             ("responses", [spec.responses] if spec.responses else [])):
            for name in names:
                hashes[f"{key}.{field}:{name}"] = sha256_file(project_file(ctx, name, f"{key}.{field}"))
    return hashes
