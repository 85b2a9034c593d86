"""The search stage for [student.search] family = "decoder" (edgekd.distill.lm_search): the
teacher's Hugging Face config scaled, each candidate exported with its KV cache, quantized to INT4
weight-only and measured by the bench worker on this host; the largest that meets the decoder
budgets (decode_tokens_per_s, ttft_ms, peak_memory_mb) is the student."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError
from edgekd.pipeline.results import Metric
from edgekd.pipeline.stage import Outcome

if TYPE_CHECKING:
    from edgekd.distill.lm_search import Candidate
    from edgekd.stages.context import Context

X86_RUNTIME = "onnxruntime-cpu"


def student_args(ctx: Context, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(factory, args) of the student `[student.hf] base = "teacher"` with `overrides` would be."""
    from edgekd.config.hf import HfModelSpec
    from edgekd.distill.hf_models import FACTORY, resolve

    spec = resolve(HfModelSpec(base="teacher", **overrides), "student.hf", ctx.project_file.path.parent, ctx.project.teacher.hf)
    return FACTORY, {"spec": spec, "task": ctx.task.name}


def measured_cost(ctx: Context) -> Any:
    """The cost function: build, export with past, INT4 weight-only, measure in the bench worker."""
    def cost(row: Candidate, config: Any, work: Path) -> None:
        from edgekd.distill.lm_search import search_bench
        from edgekd.distill.trainer import count_params
        from edgekd.graph.decoder import complete_for, with_past
        from edgekd.graph.weight_only import WeightOnly, quantize_weight_only
        from edgekd.perf.measure import measure
        from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S, PEAK_MEMORY_MB, TTFT_MS
        from edgekd.pipeline.lm_metrics import lm_bench_metrics
        from edgekd.tasks.export import export_hf

        work.mkdir(parents=True, exist_ok=True)
        model = ctx.build_model_from(*student_args(ctx, row.overrides), "student.search")
        row.params = count_params(model)
        fp32, int4 = work / "fp32.onnx", work / "int4.onnx"
        export_hf(model, ctx.task, fp32, ctx.target.opset, with_past=True)
        setting = WeightOnly()
        quantize_weight_only(fp32, int4, setting)
        inputs = with_past(ctx.model_inputs, int4)
        result = measure(int4, complete_for(inputs, ctx.eval_feeds.first(1)), inputs, ctx.target.session,
                         search_bench(ctx.profile.recipe.bench), work)
        metrics = lm_bench_metrics(result)
        row.ttft_ms, row.decode_tokens_per_s, row.peak_memory_mb = (metrics[n].value for n in (TTFT_MS, DECODE_TOKENS_PER_S, PEAK_MEMORY_MB))
        row.how = f"untrained candidate, optimum-onnx export with past, {setting.describe()}; {metrics[DECODE_TOKENS_PER_S].how}"
    return cost


def _checked(ctx: Context) -> Any:
    """The teacher's transformers config; ConfigError where the search cannot run."""
    from edgekd.distill.hf_models import base_config

    if ctx.project.teacher.hf is None or ctx.task.name != "causal-lm":
        raise ConfigError(f"{ctx.source}: key 'student.search.family': 'decoder' scales the teacher's Hugging Face config",
                          "give the teacher as [teacher.hf] (a causal LM), or another student family")
    if ctx.target.runtime != X86_RUNTIME or not ctx.project.student.search.measure_x86:
        raise ConfigError(f"{ctx.source}: the decoder search measures candidates on this host (x86 targets), not on "
                          f"'{ctx.target.runtime}'", "give the student as [student.hf] for this target, or search for an x86 target")
    return base_config(ctx.factory_of(ctx.project.teacher, "teacher")[1]["spec"])


def run_decoder_search(ctx: Context, out: Path) -> Outcome:
    """Pick the decoder student; its measured numbers are the search stage's metrics, which the
    decoder budgets check (so a pick that meets none stops the build here, with every candidate noted)."""
    from edgekd.distill.lm_search import Budget, search_decoder
    from edgekd.pipeline.budgets import DECODE_TOKENS_PER_S, PEAK_MEMORY_MB, TTFT_MS

    config = _checked(ctx)
    s, budgets = ctx.project.student.search, ctx.profile.budgets
    budget = Budget(budgets.decode_tokens_per_s, budgets.ttft_ms, budgets.peak_memory_mb)
    try:
        chosen, rows = search_decoder(config, [(w, d) for w in s.widths for d in s.depths], budget, measured_cost(ctx), out / "candidates")
    finally:
        shutil.rmtree(out / "candidates", ignore_errors=True)
    factory, args = student_args(ctx, chosen.overrides)
    rule = "the most parameters among the candidates meeting every decoder budget"
    data = {"family": "decoder", "budget": vars(budget), "candidates": [r.to_json() for r in rows], "rule": rule}
    (out / "student.json").write_text(json.dumps({"factory": factory, "args": args, "search": data}, indent=1))
    metrics = {f"search.{name.split('.', 1)[1]}": Metric(value, unit, "measured", chosen.how) for name, value, unit in (
        (DECODE_TOKENS_PER_S, chosen.decode_tokens_per_s, "tokens/s"), (TTFT_MS, chosen.ttft_ms, "ms"),
        (PEAK_MEMORY_MB, chosen.peak_memory_mb, "MiB"))}
    metrics["search.params"] = Metric(chosen.params, "", "measured", "parameters of the untrained candidate")
    notes = [f"{'chose' if chosen.fits else 'NO candidate fits; smallest is'} decoder width {chosen.width:g} depth {chosen.depth:g} "
             f"({chosen.overrides}): {rule} (decode budget {budget.decode_tokens_per_s} tokens/s, TTFT budget {budget.ttft_ms} ms, "
             f"memory budget {budget.peak_memory_mb} MiB; INT4 weight-only engines measured here, untrained)"]
    notes += [f"candidate w{r.width:g} d{r.depth:g}: {r.params:,} params, {r.decode_tokens_per_s or 0:.4g} tokens/s, TTFT "
              f"{r.ttft_ms or 0:.3g} ms, peak {r.peak_memory_mb or 0:.4g} MiB ({r.seconds:.1f} s), " + ("fits" if r.fits else "does not fit: " + "; ".join(r.why_not))
              for r in rows]
    return Outcome(metrics, notes)
