"""Engine tuning for ONNX Runtime CPU targets: INT8 is not always faster.

The compile stage builds every model variant the target allows (INT8 Q/DQ, INT8 QOperator, fp32),
measures each variant's accuracy per graph optimization level, then times every combination with
every thread count / optimization level / execution mode, interleaved in rounds (so drift on a busy
host hits all candidates alike; one process per runtime, edgekd.perf.interleaved), and keeps the
fastest that meets the budgets.
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.config.target import SessionConfig

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context



@dataclass(frozen=True)
class Variant:
    precision: str  # fp32 | int8 | int4
    quant_format: str | None  # qdq | qoperator | dynamic for int8; weight-only-b<block> (MatMulNBits) for int4/int8
    model: Path
    how: str = ""  # how the model file was made, for the record
    runtime: str = "onnxruntime"  # edgekd.backends.runners: onnxruntime | openvino
    build_s: float | None = None  # seconds the tuner spent making the file (None: an earlier stage made it, or given)
    parts: tuple[Path, ...] = ()  # a prompt/decode split graph's two part files (edgekd.graph.phase_split): judged both
    keeps_logits: bool = False  # a decoder with the logits_to_keep input (edgekd.graph.logits_to_keep): its prompt pass is fed 1

    @property
    def name(self) -> str:
        name = self.precision if self.quant_format is None else f"{self.precision}-{self.quant_format}"
        return name if self.runtime == "onnxruntime" else f"{self.runtime}-{name}"

    @property
    def size_mb(self) -> float:
        """The model's file size (MB = 10^6 bytes); an OpenVINO IR counts its .bin too."""
        files = [self.model, *([self.model.with_suffix(".bin")] if self.model.suffix == ".xml" else [])]
        return sum(f.stat().st_size for f in files) / 1e6


def _sessions(ctx: Context) -> list[SessionConfig]:
    space, base = ctx.target.tune, ctx.target.session
    axes = (space.intra_op_num_threads or [base.intra_op_num_threads],
            space.graph_optimization_levels or [base.graph_optimization_level],
            space.execution_modes or [base.execution_mode])
    return [base.model_copy(update={"intra_op_num_threads": t, "graph_optimization_level": g, "execution_mode": m})
            for t, g, m in itertools.product(*axes)]


def _candidate_settings(ctx: Context, variant: Variant) -> list[Any]:
    """The session settings `variant` is timed with: ONNX Runtime's [tune] axes, or for an OpenVINO
    variant its CPU properties per thread count of [tune] (edgekd.backends.openvino.settings)."""
    if variant.runtime == "openvino":
        from edgekd.backends.openvino.settings import settings_space

        space, base = ctx.target.tune, ctx.target.session
        return settings_space(space.intra_op_num_threads or [base.intra_op_num_threads])
    return _sessions(ctx)


def _settings_axes(variants: list[Variant], ort_sessions: int) -> str:
    """What each runtime's variants are timed with, for the record's "how"."""
    axes = [f"{ort_sessions} ONNX Runtime session settings"] if any(v.runtime == "onnxruntime" for v in variants) else []
    return ", ".join(axes + (["OpenVINO: one per thread count and inference precision"] if any(v.runtime == "openvino" for v in variants) else []))


def _variant_kinds(ctx: Context) -> list[tuple[str, str | None]]:
    """(precision, quant format) of each model variant the target's [tune] allows."""
    space = ctx.target.tune
    kinds = [("int8", fmt) for fmt in space.quant_formats] if "int8" in space.precisions else []
    return kinds + ([("fp32", None)] if "fp32" in space.precisions else [])


def candidate_count(ctx: Context) -> int:
    """How many engines tuning would time: model variants x session settings (per runtime [tune] lists)."""
    space, kinds = ctx.target.tune, len(_variant_kinds(ctx))
    openvino = kinds * len(space.intra_op_num_threads or [ctx.target.session.intra_op_num_threads]) if "openvino" in space.runtimes else 0
    return (max(1, kinds) * len(_sessions(ctx)) if "onnxruntime" in space.runtimes else 0) + openvino


def _quantized_variant(ctx: Context, fmt: str, source: Path, out: Path, label: str | None = None) -> Variant:
    """An int8 variant the tuner quantizes itself: static QOperator (the quantize stage's recipe and
    calibration rows) or dynamic, from `source` (the fused graph of a transformer, or the fp32 one);
    `label`: its quant_format in the record when not `fmt` (e.g. dynamic-unfused)."""
    from edgekd.graph.quantize import (
        calibration_rows,
        dynamic_op_types,
        quantize_dynamic_int8,
        quantize_int8,
    )

    path, tq, start = out / f"student_int8_{label or fmt}.onnx", ctx.quant_recipe, time.perf_counter()
    logging.disable(logging.WARNING)  # "use QDQ for S8S8 on x64": the measurement says whether it matters
    try:
        if fmt == "dynamic":
            quantize_dynamic_int8(source, path, tq, dynamic_op_types())
            how = (f"quantize_dynamic of {source.name}: int8 weights (per-channel {tq.per_channel}, reduce_range "
                   f"{tq.reduce_range}) of {', '.join(dynamic_op_types())} (Conv stays fp32: ConvInteger measured slower), "
                   "activations quantized at run time, no calibration")
        else:
            masks = tuple(i.name for i in ctx.model_inputs.inputs if i.role == "attention_mask")
            quantize_int8(source, path, calibration_rows(ctx.calib_feeds.arrays, ctx.quantize_config),
                          ctx.quantize_config, tq, quant_format=fmt, mask_inputs=masks)
            how = f"quantize_static to {fmt} of {source.name}, the quantize stage's recipe and calibration rows"
    finally:
        logging.disable(logging.NOTSET)
    return Variant("int8", label or fmt, path, how, build_s=time.perf_counter() - start)


def build_variants(ctx: Context, fp32: Path, int8_qdq: Path, out: Path, fused: Path | None = None) -> tuple[list[Variant], list[str]]:
    """The model files to try, and notes on variants left out: the quantize stage's Q/DQ graph, a
    QOperator graph quantized with the same recipe and calibration samples (written into `out`), a
    dynamically quantized graph (transformer graphs only), and the fp32 graph. `fused`: the quantize
    stage's fused fp32 graph of a transformer (edgekd.backends.ort.transformer), the source of the
    fp32 and dynamic variants when given; the dynamic one is also made from the unfused graph
    ("dynamic-unfused": ONNX Runtime's own session fusions only), so the fusion is measured, not assumed."""
    import onnx

    from edgekd.backends.ort.recipes import recipe_variants
    from edgekd.graph.decoder import has_kv_cache
    from edgekd.graph.transformer import is_transformer

    if has_kv_cache(fp32):
        variants, notes = _decoder_variants(ctx, fp32, int8_qdq, out)
        if "openvino" in ctx.target.tune.runtimes:
            notes.append("OpenVINO candidates not tried: decoders with a KV cache stay on ONNX Runtime for now")
        return variants, notes
    source, variants, notes = fused or fp32, [], []
    for precision, fmt in _variant_kinds(ctx) if "onnxruntime" in ctx.target.tune.runtimes else []:
        if precision == "fp32":
            variants.append(Variant("fp32", None, source, f"the {'fused' if fused else 'given'} fp32 graph {source.name}"))
        elif fmt == "qdq":
            variants.append(Variant("int8", "qdq", int8_qdq, f"the quantize stage's static Q/DQ graph, from {source.name}"))
            made, recipe_notes = recipe_variants(ctx, source, out)  # [tune] qdq_recipes (edgekd.backends.ort.recipes)
            variants, notes = variants + [Variant(**kw) for kw in made], notes + recipe_notes
        elif fmt == "dynamic" and not (fused or is_transformer(onnx.load(str(fp32), load_external_data=False))):
            notes.append("int8-dynamic not tried: it is for transformer graphs (MatMul/Attention weights), and this is not one")
        else:
            variants.append(_quantized_variant(ctx, fmt, source, out))
            if fmt == "dynamic" and fused is not None:  # fusion is measured too: ViT-Tiny's SkipLayerNormalization cost 13 %
                variants.append(_quantized_variant(ctx, fmt, fp32, out, label="dynamic-unfused"))
            if fmt == "dynamic":
                made, mha_notes = _mha_variants(ctx, fp32, out)
                variants, notes = variants + made, notes + mha_notes
    if "openvino" in ctx.target.tune.runtimes:
        from edgekd.backends.openvino.variants import openvino_variants

        rows, ov_notes = openvino_variants(ctx, fp32, out)
        variants, notes = variants + [Variant(*row, runtime="openvino") for row in rows], notes + ov_notes
    return variants or [Variant("int8", "qdq", int8_qdq, "the quantize stage's static Q/DQ graph")], notes


def _mha_variants(ctx: Context, fp32: Path, out: Path) -> tuple[list[Variant], list[str]]:
    """The MultiHeadAttention-fused graph's dynamic INT8 and (when [tune] tries fp32) fp32 variants
    (edgekd.backends.ort.encoder_tune); none, with a note, where the attention does not fuse."""
    from dataclasses import replace

    from edgekd.backends.ort.encoder_tune import MHA, mha_graph

    row, notes = mha_graph(ctx, fp32, out)
    if row is None:
        return [], notes
    fused = Variant(**row)
    dynamic = _quantized_variant(ctx, "dynamic", fused.model, out, label=f"dynamic-{MHA}")
    dynamic = replace(dynamic, how=f"{dynamic.how}; {fused.how}", build_s=(dynamic.build_s or 0.0) + (fused.build_s or 0.0))
    return [dynamic, *([fused] if "fp32" in ctx.target.tune.precisions else [])], notes


def _decoder_variants(ctx: Context, fp32: Path, int8: Path, out: Path) -> tuple[list[Variant], list[str]]:
    """A KV-cache decoder's variants (edgekd.backends.ort.decoder_tune), all from the fp32 graph with the
    logits_to_keep input where it has a language-model head to slice (then the dynamic INT8 graph is
    quantized from it here, else the quantize stage's is used): dynamic INT8, the
    GroupQueryAttention-fused fp32 graph and its dynamic INT8 (where it fuses), the [tune] weight_only
    graphs (from the fused graph where it fused), the prompt/decode splits, fp32."""
    from dataclasses import replace

    from edgekd.backends.ort.decoder_tune import (
        GQA,
        dynamic_int8,
        fused_variants,
        keep_logits,
        phase_split_variants,
        weight_only_variants,
    )

    kinds = _variant_kinds(ctx)
    int8_kind = any(p == "int8" for p, _ in kinds)
    source, notes = keep_logits(ctx, fp32, out)
    variants = [Variant(**dynamic_int8(ctx, source, int8, out, source != fp32))] if int8_kind else []
    fused, fused_notes = fused_variants(ctx, source, out, int8_kind)
    wanted = {"fp32": ("fp32", None) in kinds, "int8": int8_kind}
    variants, notes = variants + [Variant(**row) for row in fused if wanted[row["precision"]]], notes + fused_notes
    weight_only, wo_notes = weight_only_variants(ctx, fused[0]["model"] if fused else source, out, GQA if fused else "")
    variants, notes = variants + [Variant(**row) for row in weight_only], notes + wo_notes
    dynamic = {v.quant_format: v for v in variants if v.precision == "int8"}
    prompt_part = dynamic.get(f"dynamic-{GQA}", dynamic.get("dynamic"))  # the prompt pass of a split: dynamic INT8, fused if it fused
    if prompt_part is not None:
        split, split_notes = phase_split_variants(ctx, source, vars(prompt_part), weight_only, out)
        variants, notes = variants + [Variant(**row) for row in split], notes + split_notes
    if ("fp32", None) in kinds:
        variants.append(Variant("fp32", None, source, f"the fp32 graph {source.name} (with its KV cache)"))
    notes.append("static Q/DQ not tried for a decoder with a KV cache: its calibration sees an empty past (no range for cached keys/values)")
    variants = variants or [Variant(**dynamic_int8(ctx, source, int8, out, source != fp32))]
    return [replace(v, keeps_logits=source != fp32) for v in variants], notes


def _rows(ctx: Context, pairs: list[tuple[Variant, Any]], measured: Any, judged: Judged) -> list[dict[str, Any]]:
    """One record row per candidate timed in full: its settings, judged quality, size, p90/p50 and budget problems."""
    from edgekd.backends.runners import numerics_key, threads

    rows = []
    for k, times in zip(measured.timed, measured.samples):
        v, s = pairs[k]
        row = {"variant": v.name, "runtime": v.runtime, "precision": v.precision, "quant_format": v.quant_format, "model": v.model.name,
               "session": s.model_dump(), "threads": threads(s), **judged.rows[(v.name, numerics_key(s))],
               "size_mb": v.size_mb, "p90_ms": _round_median_p90(times, ctx.profile.recipe.tune.rounds),
               "p50_ms": float(np.percentile(times, 50)), "runs": len(times), "timing_s": measured.timing_s[k]}
        row["problems"] = _budget_problems(ctx, row, judged.fp32["accuracy"], judged.fp32.get(ctx.metric.name))
        rows.append(row)
    return rows


def rank_ms(row: dict[str, Any]) -> float:
    """What rows are ranked by: a decoder's generation time (edgekd.backends.ort.decoder_tune.generation), else p90."""
    return float(row.get("generation_ms", row["p90_ms"]))


def _round_median_p90(times: list[float], rounds: int) -> float:
    """The median over rounds of each round's p90: one round hit by a burst of load on a shared host
    does not decide the ranking (pooled percentiles are noisier than the gaps between candidates)."""
    return float(np.median([np.percentile(r, 90) for r in np.array_split(np.asarray(times), rounds)]))


def _budget_problems(ctx: Context, row: dict[str, Any], fp32_fidelity: float, fp32_metric: float | None = None) -> list[str]:
    """Budgets broken by `row`: the quantize budget of the task's metric (accuracy: vs `fp32_fidelity`;
    another metric, e.g. perplexity: `row[metric]` vs `fp32_metric`), size_mb, latency_p90_ms."""
    from edgekd.backends.ort.decoder_tune import metric_problems

    b, problems = ctx.profile.budgets, []
    drop = fp32_fidelity - row["accuracy"]
    if ctx.metric.name != "accuracy":
        problems += metric_problems(ctx, row.get(ctx.metric.name), fp32_metric)
    elif b.quantize_accuracy_drop_pt is not None and drop > b.quantize_accuracy_drop_pt:
        problems.append(f"accuracy {row['accuracy']:.2f}% is {drop:.2f} pt below fp32 > quantize_accuracy_drop_pt {b.quantize_accuracy_drop_pt}")
    if b.size_mb is not None and row["size_mb"] > b.size_mb:
        problems.append(f"size {row['size_mb']:.3f} MB > size_mb {b.size_mb}")
    if b.latency_p90_ms is not None and row["p90_ms"] > b.latency_p90_ms:
        problems.append(f"p90 {row['p90_ms']:.4g} ms > latency_p90_ms {b.latency_p90_ms}")
    return problems


def _fidelity(ctx: Context, fp32: Path, pairs: list[tuple[Variant, Any]]) -> tuple[float, dict, str]:
    """The number the accuracy budget is checked on, per (variant, numerics key: edgekd.backends.runners
    numerics_key, e.g. the optimization level): top-1 accuracy on the labelled evaluation data; without
    labels, the expected top-1 accuracy with fp32's softmax as the label distribution
    (edgekd.pipeline.evaluation.expected_top1_pt: a proxy, said so), with top-1 agreement beside it.
    Each variant runs in its own runtime. Returns (fp32's value, per candidate {"accuracy", ...}, what it is)."""
    from edgekd.backends.ort.session import predict_file
    from edgekd.backends.runners import numerics_key, predict
    from edgekd.pipeline.evaluation import agreement_pt, expected_top1_pt, top1_pt

    feeds = ctx.eval_feeds
    reference = predict_file(fp32, feeds.arrays, SessionConfig(graph_optimization_level="basic"))
    judged = {(v.name, numerics_key(s)): (v, s) for v, s in pairs}
    outputs = {k: predict(v.runtime, v.model, feeds.arrays, s) for k, (v, s) in judged.items()}
    if feeds.labels is not None:
        return (top1_pt(reference, feeds.labels), {k: {"accuracy": top1_pt(o, feeds.labels)} for k, o in outputs.items()},
                f"accuracy on {feeds.description}")
    return (expected_top1_pt(reference, reference),
            {k: {"accuracy": expected_top1_pt(o, reference), "agreement": agreement_pt(o, reference)} for k, o in outputs.items()},
            f"no labels: the expected top-1 accuracy with the fp32 graph's softmax as the label distribution, on {feeds.description}, "
            "stands in for accuracy (the accuracy budget is checked on its drop from fp32's own; top-1 agreement with fp32 is "
            "reported beside it as 'agreement')")


def choose(rows: list[dict[str, Any]], metric: str = "accuracy") -> tuple[int, str]:
    """The chosen row of `rows` (sorted fastest first by rank_ms; each with "problems", a list of budget
    problems) and why: the fastest meeting every budget; else the fastest holding the budget of the
    task's `metric`; else the fastest."""
    fits = [i for i, r in enumerate(rows) if not r["problems"]]
    if fits:
        chosen = fits[0]
        reason = (f"fastest of the {len(fits)} candidates meeting every budget"
                  + (f"; {chosen} faster candidate(s) broke a budget" if chosen else ""))
    else:
        accurate = [i for i, r in enumerate(rows) if not any(p.startswith(metric) for p in r["problems"])]
        chosen = accurate[0] if accurate else 0
        reason = "no candidate meets every budget: kept the fastest " + (f"that holds the {metric} budget" if accurate else "candidate")
    runner_up = next((r for i, r in enumerate(rows) if i != chosen and not r["problems"]), None)
    if runner_up is not None:
        settings = runner_up["session"]
        numerics = settings.get("graph_optimization_level", settings.get("inference_precision_hint"))
        what = "generation time" if "generation_ms" in runner_up else "p90"
        reason += (f"; next best {runner_up['variant']} at {runner_up['threads']} thread(s), "
                   f"'{numerics}': {what} {rank_ms(runner_up) / rank_ms(rows[chosen]):.2f}x the chosen one's")
    return chosen, reason


@dataclass(frozen=True)
class Judged:
    """What the budgets are checked on: fp32's values and each (variant, optimization level)'s
    ({"accuracy": top-1 or agreement, and for a task with another metric its value, e.g. "perplexity"})."""

    fp32: dict[str, Any]
    rows: dict[tuple[str, str], dict[str, Any]]
    how: str


def _judge(ctx: Context, fp32: Path, pairs: list[tuple[Variant, Any]], decoder: bool) -> Judged:
    if decoder:  # ONNX Runtime candidates only
        from edgekd.backends.ort.decoder_tune import quality

        variants = list({v.name: v for v, _ in pairs}.values())
        levels = {s.graph_optimization_level: s for _, s in pairs}  # threads and mode do not change the numerics
        ref, values, how = quality(ctx, fp32, variants, levels)
        return Judged({**ref, "accuracy": 100.0},
                      {k: {**v, "accuracy": v["agreement"]} for k, v in values.items()}, how)
    fp32_fidelity, fidelity, how = _fidelity(ctx, fp32, pairs)
    return Judged({"accuracy": fp32_fidelity}, fidelity, how)


def _timed_feed(ctx: Context, fp32: Path, decoder: bool) -> tuple[dict[str, np.ndarray], str]:
    """The feed every candidate is timed on: a decoder's decode step with its KV cache, else the first evaluation sample."""
    if decoder:
        from edgekd.backends.ort.decoder_tune import decode_step

        step = decode_step(fp32, ctx.eval_feeds.first(), ctx.model_inputs)
        return step.feed, step.how
    return ctx.eval_feeds.first(), "the first evaluation sample at batch 1"


def tune(ctx: Context, fp32: Path, int8_qdq: Path, out: Path, fused: Path | None = None) -> tuple[dict[str, Any], Path]:
    """Try every candidate (`out`: a scratch folder for the variants and the worker's files; `fused`:
    see build_variants). Returns the record (every row: settings, accuracy, size, p90, budget
    problems; rows fastest first; the chosen row's index and why; how each variant was made) and
    the chosen model file. Accuracy (or the task's metric) is checked against the given fp32 graph `fp32`."""
    from edgekd.backends.ort import prune
    from edgekd.backends.ort.decoder_tune import generation, prompt_pass, prompt_runs
    from edgekd.backends.ort.mixed_search import MixedInputs, finish, mixed_precision
    from edgekd.backends.runners import numerics_key
    from edgekd.graph.decoder import has_kv_cache
    from edgekd.graph.logits_to_keep import optional_input

    cfg, decoder = ctx.profile.recipe.tune, has_kv_cache(fp32)
    clock = prune.Clock()
    variants, left_out = build_variants(ctx, fp32, int8_qdq, out, fused)
    clock.lap("variants_s")
    sessions = _sessions(ctx)
    pairs = [(v, s) for v in variants for s in _candidate_settings(ctx, v)]
    judged = _judge(ctx, fp32, pairs, decoder)
    clock.lap("judge_s")
    mixed = mixed_precision(ctx, MixedInputs(fp32, fused or fp32, out), variants, judged)  # runs when every INT8 candidate breaks the budget
    if mixed is not None and mixed.variants:
        added = [Variant(*row) for row in mixed.variants]
        extra = [(v, s) for v in added for s in _candidate_settings(ctx, v)]
        variants, pairs = variants + added, pairs + extra
        judged.rows.update(_judge(ctx, fp32, extra, decoder).rows)
    clock.lap("mixed_precision_s")
    feed, timed = _timed_feed(ctx, fp32, decoder)

    def known(v: Variant, s: Any) -> list[str]:  # budget problems known before timing (quality, size)
        row = {**judged.rows[(v.name, numerics_key(s))], "size_mb": v.size_mb, "p90_ms": 0.0}
        return _budget_problems(ctx, row, judged.fp32["accuracy"], judged.fp32.get(ctx.metric.name))
    keep = bool(variants) and all(v.keeps_logits for v in variants)
    cands, prompt = prune.candidates(pairs, known), prompt_pass(ctx, fp32, keep) if decoder else None
    measured = prune.measure(ctx, cands, feed, out, prompt and prune.Prompt(prompt[0], ctx.profile.recipe.bench.decode_tokens,
                                                                          prompt_runs(ctx)))
    rows, ranked = _rows(ctx, pairs, measured, judged), ""
    if prompt is not None:  # the prompt pass too: rows ranked by the bench's generation (prompt, then decode_tokens steps)
        ranked = "; then " + generation(ctx, prompt[1], rows, measured.prompt_samples, prompt_runs(ctx))
    models, keeps = {v.name: v.model for v in variants}, {v.name for v in variants if v.keeps_logits}
    rows.sort(key=rank_ms)
    chosen, reason = choose(rows, ctx.metric.name)
    optional = [optional_input()] if rows[chosen]["variant"] in keeps else []
    budget = f"quantize_{ctx.metric.degradation_name}"
    return {"chosen": chosen, "reason": reason, "fp32_accuracy": judged.fp32["accuracy"], "accuracy_is": judged.how, "rows": rows,
            **({f"fp32_{ctx.metric.name}": judged.fp32[ctx.metric.name]} if ctx.metric.name in judged.fp32 else {}),
            "variants": {v.name: v.how for v in variants}, "left_out": left_out, **finish(mixed, rows, chosen),
            **({"optional_inputs": optional} if optional else {}),
            **measured.record(clock, variants),
            "how": (f"{len(pairs)} candidates ({len(variants)} model variants x their runtime's settings: {_settings_axes(variants, len(sessions))}), "
                    f"{measured.describe(len(pairs))}, timed on {timed} on this host, "
                    f"{cfg.rounds} interleaved rounds of {measured.runs_per_round} runs each after {cfg.warmup_runs} warm-up runs, one process per runtime (edgekd.perf.interleaved); "
                    "p90 = median over rounds of each round's p90, p50 over all runs; "
                    f"quality per variant and optimization level: {judged.how}; budgets: {budget} (vs fp32), size_mb, latency_p90_ms"
                    + ranked)}, \
        models[rows[chosen]["variant"]]
