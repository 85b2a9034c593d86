"""The teacher and distill stages: get the teacher (train it, load it, or wrap an ONNX model /
logits files / an ensemble), then distill the student with the configured losses, the teacher's
logits computed once and cached across epochs and builds."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.distill.sources import teacher_files, teacher_source
from edgekd.distill.weights import save_weights, size_metrics
from edgekd.errors import ConfigError
from edgekd.provenance import lineage_notes, teacher_weights_metadata, weights_metadata
from edgekd.results import Metric
from edgekd.toolchain import version

if TYPE_CHECKING:
    from edgekd.context import Context
    from edgekd.distill.teachers import TeacherSource
    from edgekd.stages import Outcome

TEACHER_WEIGHTS = "teacher.safetensors"


def torch_where() -> str:
    return f"torch {version('torch')} eager, CPU"


def teacher_key(ctx: Context) -> dict[str, Any]:
    return {"teacher": ctx.project.teacher.model_dump(), "files": teacher_files(ctx), "data": ctx.data_sha256}


def _runs_on_test(ctx: Context) -> bool:
    """Whether the teacher can be asked about the test split (logits files only cover training data)."""
    cfg = ctx.project.teacher
    kinds = [m.kind for m in cfg.members] if cfg.kind == "ensemble" else [cfg.kind]
    return "logits" not in kinds


def run_teacher(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import train_supervised
    from edgekd.stages import Outcome, accuracy_metric

    cfg = ctx.project.teacher
    metrics: dict[str, Metric] = {}
    if cfg.kind == "torch" and cfg.train is not None:
        model = ctx.build_model("teacher")
        losses = train_supervised(model, ctx.data.train, cfg.train)
        save_weights(model, out / TEACHER_WEIGHTS, teacher_weights_metadata(ctx))
        source = TorchTeacher(model, None, f"torch module {cfg.factory}({cfg.args}), trained here")
        notes = [f"teacher trained here: {cfg.train.epochs} epochs on {len(ctx.data.train)} samples, final loss {losses[-1]:.4f}"]
    else:
        source = teacher_source(ctx, None)
        if isinstance(source, TorchTeacher):
            save_weights(source.module, out / TEACHER_WEIGHTS, teacher_weights_metadata(ctx))
        notes = [f"teacher: {source.describe()}"]
    if isinstance(source, TorchTeacher):
        metrics.update(size_metrics(source.module, ctx.data.input_shape, "teacher"))
    if _runs_on_test(ctx):
        where = torch_where() if isinstance(source, TorchTeacher) else source.describe()
        metrics["teacher.accuracy"] = accuracy_metric(ctx, source.logits(ctx.data.test.x), where)
    else:
        metrics["teacher.accuracy"] = Metric(None, "%", "not available", "logits files hold soft labels for the training data only")
    (out / "teacher.json").write_text(json.dumps({"kind": cfg.kind, "describe": source.describe(), "identity": source.identity()}, indent=1))
    return Outcome(metrics, notes)


def build_student(ctx: Context, student_json: Path) -> tuple[Any, str]:
    """The (untrained) student module the search stage chose, and its description."""
    choice = json.loads(student_json.read_text())
    key = "student.search" if "search" in choice else "student.factory"
    return ctx.build_model_from(choice["factory"], choice["args"], key), f"{choice['factory']}({choice['args']})"


def _teacher_of_student(ctx: Context, inputs: dict[str, Path]) -> TeacherSource:
    """The teacher, or the last link of the teacher-assistant chain."""
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.weights import load_weights
    from edgekd.fsutil import sha256_file

    chain = json.loads(inputs["assistant.json"].read_text()) if "assistant.json" in inputs else {"chain": []}
    if not chain["chain"]:
        return teacher_source(ctx, inputs.get(TEACHER_WEIGHTS))
    module = ctx.build_model_from(chain["factory"], chain["args"], "teacher.assistants")
    weights = inputs["assistant.safetensors"]
    load_weights(module, weights, "assistant")
    return TorchTeacher(module, sha256_file(weights), f"torch module {chain['factory']}({chain['args']}), the last teacher assistant")


def run_distill(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.trainer import build_objective, distill, predict
    from edgekd.stages import Outcome, accuracy_metric

    cfg = ctx.project.distill
    source = _teacher_of_student(ctx, inputs)
    student, described = build_student(ctx, inputs["student.json"])
    objective = build_objective(cfg)
    if objective.teacher_layers() and not source.has_features:
        raise ConfigError(f"{ctx.source}: key 'distill.losses': feature losses need a torch teacher, and the teacher is "
                          f"{source.describe()}", "use logit losses (kd, hinton, dkd) with black-box teachers")
    train = ctx.data.train
    logits, how = None, "teacher run every step"
    if objective.needs_teacher_logits() and (cfg.teacher_logit_cache or not isinstance(source, TorchTeacher)):
        logits, hit = cached_teacher_logits(source, train.x, ctx.cache_root / "teacher-logits", train.sha256(), None)
        how = "teacher logits from the cache (computed in an earlier build)" if hit else "teacher logits computed once and cached"
    features, layers = None, objective.teacher_layers()
    if layers:  # feature losses have a TorchTeacher (checked above)
        from edgekd.distill.feature_cache import features_for_training

        features, feature_how = features_for_training(source, train, layers, cfg, ctx.cache_root)  # type: ignore[arg-type]
        how = f"{how}; {feature_how}"
    module = source.module if isinstance(source, TorchTeacher) else None
    losses = distill(student, train, cfg, objective, logits, module, teacher_features=features)
    save_weights(student, out / "student.safetensors", weights_metadata(ctx, "distill"))
    metrics = {"student.accuracy": accuracy_metric(ctx, predict(student, ctx.data.test.x), torch_where()),
               **size_metrics(student, ctx.data.input_shape, "student")}
    terms = " + ".join(f"{s.weight:g}*{s.name}{s.params or ''}" for s in cfg.losses)
    notes = [f"student {described}; objective {terms} (T={cfg.temperature}, alpha={cfg.alpha} where unset)",
             f"{cfg.epochs} epochs, lr {cfg.lr}, batch {cfg.batch_size}, seed {cfg.seed}; final loss {losses[-1]:.4f}; {how}",
             f"teacher: {source.describe()}", *lineage_notes(ctx)]
    return Outcome(metrics, notes)


def search_key(ctx: Context) -> dict[str, Any]:
    cfg = ctx.project.student
    key: dict[str, Any] = {"student": cfg.model_dump()}
    if cfg.search is not None:  # the pick depends on the target, the budgets it must fit, and (x86) this host
        budgets = ctx.profile.budgets
        key |= {"target": ctx.target.model_dump(), "recipe": ctx.quant_recipe.model_dump(), "host": ctx.host_fingerprint(),
                "latency_p90_ms": budgets.latency_p90_ms, "size_mb": budgets.size_mb, "data": ctx.data_sha256}
    return key


def run_search(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    """Which student to distill: the project's factory, or (with [student.search]) the largest
    family member whose latency on the target and size fit the profile's budgets, chosen before
    any training."""
    from edgekd.stages import Outcome

    cfg = ctx.project.student
    if cfg.search is None:
        (out / "student.json").write_text(json.dumps({"factory": cfg.factory, "args": cfg.args}))
        return Outcome({}, [f"student from the project: {cfg.factory}({cfg.args})"])
    import shutil

    from edgekd.distill.search import NoStudentFits, search_student

    s, t, budgets = cfg.search, ctx.target, ctx.profile.budgets
    try:
        result = search_student(s.family, ctx.data.input_shape, ctx.data.num_classes,
                                [(w, d) for w in s.widths for d in s.depths], budgets.latency_p90_ms, budgets.size_mb,
                                t.runtime, t.device, s.measure_x86 and t.runtime == "onnxruntime-cpu", out / "candidates",
                                session=t.session, recipe=ctx.quant_recipe, opset=t.opset)
        chosen = result.chosen
    except NoStudentFits as exc:  # keep the smallest: its latency/size verdicts stop the build, with the report
        result = exc.result
        chosen = min(result.candidates, key=lambda c: (c.macs, c.params))
    shutil.rmtree(out / "candidates", ignore_errors=True)
    data = result.to_json()
    args = {"input_shape": list(ctx.data.input_shape), "num_classes": ctx.data.num_classes, "width": chosen.width, "depth": chosen.depth}
    (out / "student.json").write_text(json.dumps({"factory": data["factory"], "args": args, "search": data}, indent=1))
    metrics = {"search.latency_ms": Metric(chosen.cost.latency_ms, "ms", chosen.cost.latency_method, chosen.cost.latency_how),
               "search.size_mb": Metric(chosen.cost.size_mb, "MB", chosen.cost.size_method, chosen.cost.size_how),
               "search.macs": Metric(chosen.macs, "", "measured", "torch.utils.flop_counter FLOPs / 2 of the untrained member")}
    notes = [f"{'chose' if chosen.fits else 'NO candidate fits; smallest is'} {s.family} width {chosen.width} depth {chosen.depth}: {data['rule']} "
             f"(latency budget {budgets.latency_p90_ms} ms, size budget {budgets.size_mb} MB)"]
    notes += [f"candidate w{c.width} d{c.depth}: {c.macs:,} MACs, {c.cost.latency_ms:.4f} ms ({c.cost.latency_method}), "
              f"{c.cost.size_mb:.3f} MB, " + ("fits" if c.fits else "does not fit: " + "; ".join(c.why_not)) for c in result.candidates]
    return Outcome(metrics, notes)


def run_qad(ctx: Context, inputs: dict[str, Path], out: Path) -> Path:
    """Quantization-aware distillation of the distilled student (edgekd.qad): fake quantization for
    the target's recipe, Hinton KD against the cached teacher logits. Returns the float QAD
    student exported to ONNX, for the quantize stage to quantize again."""
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.export import export_onnx
    from edgekd.qad import qad_finetune

    from edgekd.distill.weights import load_weights

    d, qad = ctx.project.distill, ctx.profile.recipe.qad
    student = load_weights(build_student(ctx, inputs["student.json"])[0], inputs["student.safetensors"], "student")
    source = _teacher_of_student(ctx, inputs)
    train = ctx.data.train
    logits, _ = cached_teacher_logits(source, train.x, ctx.cache_root / "teacher-logits", train.sha256(), None)
    tuned = qad_finetune(student, logits, train, ctx.quant_recipe, qad.epochs, qad.lr, d.batch_size, d.temperature, d.alpha, d.seed)
    save_weights(tuned, out / "student_qad.safetensors")
    path = out / "student_qad.onnx"
    export_onnx(tuned, ctx.data.input_shape, path, ctx.target.opset)
    return path
