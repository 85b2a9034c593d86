"""search: the project's student, or the largest member of a student family that fits the latency and size
budgets on the target, chosen before any training."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome, Stage
from edgekd.stages.common import describe_factory

if TYPE_CHECKING:
    from edgekd.stages.context import Context


def search_key(ctx: Context) -> dict[str, Any]:
    cfg = ctx.project.student
    key: dict[str, Any] = {"student": cfg.model_dump()}
    if cfg.hf is not None:  # a model folder's content, resolved
        key["model"] = ctx.factory_of(cfg, "student")[:2]
    if cfg.search is not None:  # the pick depends on the target, the budgets it must fit, and (x86) this host
        budgets = ctx.profile.budgets
        key |= {"target": ctx.target.model_dump(), "recipe": ctx.quant_recipe.model_dump(), "host": ctx.host_fingerprint(),
                "latency_p90_ms": budgets.latency_p90_ms, "size_mb": budgets.size_mb, "data": ctx.data_sha256}
        if cfg.search.family == "decoder":  # measured on the decoder scenarios against the decoder budgets
            key |= {"teacher": ctx.factory_of(ctx.project.teacher, "teacher")[:2], "bench": ctx.profile.recipe.bench.model_dump(),
                    "decoder_budgets": [budgets.decode_tokens_per_s, budgets.ttft_ms, budgets.peak_memory_mb]}
    return key


def run_search(ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome:
    """Which student to distill: the project's factory, or (with [student.search]) the largest
    family member whose latency on the target and size fit the profile's budgets, chosen before
    any training."""
    from edgekd.pipeline.stage import Outcome

    cfg = ctx.project.student
    if cfg.search is None:
        factory, args, _ = ctx.factory_of(cfg, "student")
        (out / "student.json").write_text(json.dumps({"factory": factory, "args": args}))
        return Outcome({}, [f"student from the project: {describe_factory(factory, args)}"])
    if cfg.search.family == "decoder":
        from edgekd.stages.search_decoder import run_decoder_search

        return run_decoder_search(ctx, out)
    import shutil

    from edgekd.distill.search import NoStudentFits, search_student

    s, t, budgets = cfg.search, ctx.target, ctx.profile.budgets
    try:
        result = search_student(s.family, ctx.input_shape, ctx.num_classes,
                                [(w, d) for w in s.widths for d in s.depths], budgets.latency_p90_ms, budgets.size_mb,
                                t.runtime, t.device, s.measure_x86 and t.runtime == "onnxruntime-cpu", out / "candidates",
                                session=t.session, recipe=ctx.quant_recipe, opset=t.opset)
        chosen = result.chosen
    except NoStudentFits as exc:  # keep the smallest: its latency/size verdicts stop the build, with the report
        result = exc.result
        chosen = min(result.candidates, key=lambda c: (c.macs, c.params))
    shutil.rmtree(out / "candidates", ignore_errors=True)
    data = result.to_json()
    args = {"input_shape": list(ctx.input_shape), "num_classes": ctx.num_classes, "width": chosen.width, "depth": chosen.depth}
    (out / "student.json").write_text(json.dumps({"factory": data["factory"], "args": args, "search": data}, indent=1))
    metrics = {"search.latency_ms": Metric(chosen.cost.latency_ms, "ms", chosen.cost.latency_method, chosen.cost.latency_how),
               "search.size_mb": Metric(chosen.cost.size_mb, "MB", chosen.cost.size_method, chosen.cost.size_how),
               "search.macs": Metric(chosen.macs, "", "measured", "torch.utils.flop_counter FLOPs / 2 of the untrained member")}
    notes = [f"{'chose' if chosen.fits else 'NO candidate fits; smallest is'} {s.family} width {chosen.width} depth {chosen.depth}: {data['rule']} "
             f"(latency budget {budgets.latency_p90_ms} ms, size budget {budgets.size_mb} MB)"]
    notes += [f"candidate w{c.width} d{c.depth}: {c.macs:,} MACs, {c.cost.latency_ms:.4f} ms ({c.cost.latency_method}), "
              f"{c.cost.size_mb:.3f} MB, " + ("fits" if c.fits else "does not fit: " + "; ".join(c.why_not)) for c in result.candidates]
    return Outcome(metrics, notes)



SEARCH = Stage("search", "pick the student: the project's, or the largest family member that fits the latency and size budgets",
               (), ("student.json",), ("torch", "onnx", "onnxscript", "onnxruntime"), search_key, run_search)
