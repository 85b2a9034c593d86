"""Engine tuning for decoders with a KV cache (x86): the variants, what is timed and what is judged.

Variants: dynamic INT8 (the quantize stage's recipe), MatMulNBits weight-only graphs ([tune] weight_only:
int4/int8 weights, float activations; edgekd.graph.weight_only), fp32, and per INT4 graph one that
runs the prompt pass on dynamic INT8 and decode steps on INT4 (edgekd.graph.phase_split). When the attention fuses
into GroupQueryAttention (edgekd.graph.gqa_fusion; outputs checked against fp32's), the fused fp32
graph and its dynamic INT8 are variants beside the unfused ones (the fusion is measured), and the
weight-only graphs are made from the fused graph. Static Q/DQ is not a
candidate: its calibration sees an empty past, so cached keys/values would get no range. Every
variant is made from the fp32 graph with the optional logits_to_keep input where its head can be
sliced (edgekd.graph.logits_to_keep): the prompt pass is timed fed 1, quality judged unfed.

Timed: one decode step (1 new token after P cached tokens, the cache made by the fp32 graph on the
first evaluation row): what every generated token costs. Judged: the task's metric (perplexity) of
each variant on the evaluation data (full-sequence forward, empty past) against the fp32 graph's,
with the quantize budget of that metric; top-1 agreement with fp32 is kept beside it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.config.target import SessionConfig
from edgekd.graph.inputs import ModelInputs
from edgekd.graph.logits_to_keep import KEEP

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context

WEIGHT_ONLY = "weight-only"
GQA = "gqa"  # the quant_format suffix of variants made from the GroupQueryAttention-fused graph
PHASE = "phase"  # the quant_format prefix of prompt/decode split graphs (edgekd.graph.phase_split)
EMBEDDING = "emb4"  # the quant_format tag of weight-only variants whose token embedding table is 4-bit too


@dataclass(frozen=True)
class DecodeStep:
    """The feed of one decode step and how it was made."""

    feed: dict[str, np.ndarray]
    how: str


def weight_only_variants(ctx: Context, source: Path, out: Path, tag: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    """Variant fields (precision, quant_format, model, how, build_s) per [tune] weight_only entry,
    quantized from `source` into `out` (`tag`: a suffix of their names, e.g. gqa for the fused
    graph's); notes on any left out."""
    from edgekd.graph.weight_only import NoEmbedding, WeightOnly, quantize_weight_only

    variants, notes, suffix = [], [], f"-{tag}" if tag else ""
    for spec in ctx.target.tune.weight_only:
        setting = WeightOnly(spec.bits, spec.block_size, spec.symmetric, spec.accuracy_level, spec.embedding)
        level = ("" if spec.accuracy_level is None else f"-acc{spec.accuracy_level}") + (f"-{EMBEDDING}" if spec.embedding else "")
        path, start = out / f"student_int{spec.bits}_b{spec.block_size}{'s' if spec.symmetric else 'a'}{level}{suffix}.onnx", time.perf_counter()
        try:
            quantized = quantize_weight_only(source, path, setting)
        except NoEmbedding as e:
            notes.append(f"{setting.name} with the embedding table not tried: {e}")
            continue
        if quantized == 0:
            notes.append(f"{setting.name} not tried: no constant MatMul weight in {source.name}")
            continue
        variants.append({"precision": f"int{spec.bits}", "quant_format": f"{WEIGHT_ONLY}-b{spec.block_size}{level}{suffix}", "model": path,
                         "how": f"{setting.describe()}, from {source.name}", "build_s": time.perf_counter() - start})
    return variants, notes


def dynamic_int8(ctx: Context, source: Path, int8: Path, out: Path, rewritten: bool) -> dict[str, Any]:
    """The dynamic INT8 variant's fields: the quantize stage's graph `int8`, or where `source` is the
    logits_to_keep rewrite of the fp32 graph (`rewritten`), the quantize stage's quantization of it."""
    from edgekd.graph.quantize import quantize_dynamic_int8

    if not rewritten:
        return {"precision": "int8", "quant_format": "dynamic", "model": int8,
                "how": "the quantize stage's dynamic INT8 graph (int8 weights, activations quantized at run time), from the fp32 graph"}
    path, start, tq = out / "student_int8_dynamic.onnx", time.perf_counter(), ctx.quant_recipe
    quantize_dynamic_int8(source, path, tq, op_types=("MatMul", "Gemm"))
    return {"precision": "int8", "quant_format": "dynamic", "model": path, "build_s": time.perf_counter() - start,
            "how": f"quantize_dynamic of {source.name}'s MatMul/Gemm weights (the quantize stage's recipe: int8, per-channel "
                   f"{tq.per_channel}, reduce_range {tq.reduce_range}), activations quantized at run time"}


def fused_variants(ctx: Context, fp32: Path, out: Path, int8: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """The fp32 graph with its attention fused into GroupQueryAttention (edgekd.graph.gqa_fusion),
    used only when its outputs match `fp32`'s on the first evaluation row's prompt and one decode step,
    and (`int8`) its dynamic INT8 (MatMul/Gemm weights, as the quantize stage's); nothing, with a note, else."""
    from edgekd.graph.gqa_fusion import NotFusable, fuse_gqa, verify
    from edgekd.graph.quantize import quantize_dynamic_int8

    path, start = out / f"student_fp32_{GQA}.onnx", time.perf_counter()
    try:
        fusion = fuse_gqa(fp32, path, ctx.max_positions, ctx.model_config)
        prompt = ctx.eval_feeds.first()
        worst = verify(fp32, path, [prompt, decode_step(fp32, prompt, ctx.model_inputs).feed])
    except NotFusable as e:
        path.unlink(missing_ok=True)
        return [], [f"GroupQueryAttention fusion not used: {e}"]
    fused = {"precision": "fp32", "quant_format": GQA, "model": path, "build_s": time.perf_counter() - start,
             "how": f"{fusion.describe()}; outputs within {worst:.1e} (relative) of {fp32.name}'s on the first evaluation "
                    "row's prompt and one decode step"}
    if not int8:
        return [fused], []
    dynamic, start = out / f"student_int8_dynamic_{GQA}.onnx", time.perf_counter()
    quantize_dynamic_int8(path, dynamic, ctx.quant_recipe, op_types=("MatMul", "Gemm"))
    return [fused, {"precision": "int8", "quant_format": f"dynamic-{GQA}", "model": dynamic, "build_s": time.perf_counter() - start,
                    "how": f"quantize_dynamic of {path.name}'s MatMul/Gemm weights (int8, per-channel {ctx.quant_recipe.per_channel}, "
                           f"reduce_range {ctx.quant_recipe.reduce_range}), activations quantized at run time"}], []


def phase_split_variants(ctx: Context, fp32: Path, prompt_row: dict[str, Any], decode_rows: list[dict[str, Any]],
                         out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Per INT4 weight-only variant in `decode_rows`, one graph that runs the prompt pass on `prompt_row`'s
    model (dynamic INT8: the faster prompt pass) and each decode step on the INT4 one
    (edgekd.graph.phase_split), used only when it gives each part's outputs in its phase; its `parts`
    are judged both (the worse counts). Notes on any not made."""
    from edgekd.graph.graph_edit import NotFusable, verify
    from edgekd.graph.phase_split import NotSplittable, split_by_phase

    tokens = next((i.name for i in ctx.model_inputs.inputs if i.role == "token_ids"), None)
    prompt = ctx.eval_feeds.first()
    step, variants, notes = decode_step(fp32, prompt, ctx.model_inputs).feed, [], []
    for row in (r for r in decode_rows if r["precision"] == "int4"):
        path, start = out / f"student_{PHASE}_{Path(row['model']).stem}.onnx", time.perf_counter()
        try:
            if tokens is None:
                raise NotSplittable("no input has the token_ids role")
            first = _prompt_part(Path(prompt_row["model"]), Path(row["model"]), out)
            split = split_by_phase(first, row["model"], path, tokens)
            worst = max(verify(first, path, [prompt]), verify(row["model"], path, [step]))
        except (NotSplittable, NotFusable) as e:
            path.unlink(missing_ok=True)
            notes.append(f"{PHASE} split of {prompt_row['quant_format']} and {row['quant_format']} not used: {e}")
            continue
        variants.append({"precision": "int4", "quant_format": f"{PHASE}-{prompt_row['quant_format']}+{row['quant_format']}", "model": path,
                         "parts": (first, Path(row["model"])), "build_s": time.perf_counter() - start,
                         "how": f"{split.describe()}; each phase's outputs within {worst:.1e} (relative) of its part's on the first "
                                "evaluation row's prompt and one decode step"})
    return variants, notes


def _prompt_part(prompt: Path, decode: Path, out: Path) -> Path:
    """The split's prompt part: `prompt`, or where `decode` has its token embedding table 4-bit
    (GatherBlockQuantized), `prompt` with the same table (byte for byte: the split stores it once), made
    once into `out`."""
    import onnx
    from onnx import helper

    from edgekd.graph.phase_split import NotSplittable
    from edgekd.graph.weight_only import NoEmbedding, quantize_embedding

    node = next((n for n in onnx.load(str(decode), load_external_data=False).graph.node if n.op_type == "GatherBlockQuantized"), None)
    if node is None:
        return prompt
    block = int(next(helper.get_attribute_value(a) for a in node.attribute if a.name == "block_size"))
    symmetric = len(node.input) < 4 or not node.input[3]  # no zero points
    path = out / f"{prompt.stem}_{EMBEDDING}_b{block}{'s' if symmetric else 'a'}.onnx"
    if not path.exists():
        try:
            quantize_embedding(prompt, path, block, symmetric)
        except NoEmbedding as e:
            raise NotSplittable(f"the decode part's embedding table is 4-bit and the prompt part's cannot be: {e}") from e
    return path


def decode_step(fp32: Path, prompt: dict[str, np.ndarray], inputs: ModelInputs) -> DecodeStep:
    """One decode step after `prompt` (batch 1): the prompt's presents (from the fp32 graph) as past,
    its greedy next token as the new input, the mask over all tokens, positions counting on; which
    input is which from `inputs`' roles."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import (
        PAST_PREFIX,
        PRESENT_PREFIX,
        complete_feeds,
        past_inputs,
    )

    session = open_session(fp32)
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, complete_feeds(session, prompt))))
    roles = {i.name: i.role for i in inputs.inputs}
    ids_name = next(n for n, role in roles.items() if role == "token_ids")
    length = prompt[ids_name].shape[1]
    feed = {ids_name: np.argmax(outputs[names[0]][:, -1:], axis=-1).astype(prompt[ids_name].dtype)}
    for name, array in prompt.items():
        if roles.get(name) == "attention_mask":
            feed[name] = np.ones((1, length + 1), array.dtype)
        elif roles.get(name) in ("position_ids", "token_type_ids"):
            feed[name] = np.full((1, 1), length if roles[name] == "position_ids" else 0, array.dtype)
    for p in past_inputs(session.get_inputs()):
        feed[p.name] = outputs[p.name.replace(PAST_PREFIX, PRESENT_PREFIX)]
    return DecodeStep(feed, f"one decode step at batch 1: 1 new token after {length} cached tokens (the first evaluation "
                            "row's prompt, its key/values from the fp32 graph), logits and present key/values computed; "
                            "a GroupQueryAttention candidate's cache in one buffer per layer bound as past and present, loaded "
                            "once (edgekd.backends.ort.kv_buffers: how its runner and onnxruntime-genai run it), any other's "
                            "presents a new array each run")


def quality(ctx: Context, fp32: Path, variants: list[Any], levels: dict[str, SessionConfig]) -> tuple[dict[str, Any], dict, str]:
    """(fp32's {metric, agreement}, {(variant, level): {metric, agreement}}, what they are): the
    task's metric on the evaluation data and top-1 agreement with the fp32 graph."""
    from edgekd.backends.ort.session import predict_file
    from edgekd.pipeline.evaluation import agreement_pt, quality_metric

    feeds, metric = ctx.eval_feeds, ctx.metric

    def judged(outputs: np.ndarray) -> dict[str, Any]:
        return {metric.name: quality_metric(metric, feeds, outputs, "", ctx.task).value, "agreement": agreement_pt(outputs, reference)}

    seen: dict[tuple[str, str], dict[str, Any]] = {}  # (model file, level): a split graph's parts are variants too

    def of_file(model: Path, level: str) -> dict[str, Any]:
        if (str(model), level) not in seen:
            seen[str(model), level] = judged(predict_file(model, feeds.arrays, levels[level]))
        return seen[str(model), level]

    def worst(variant: Any, level: str) -> dict[str, Any]:  # a split graph: the worse of its parts
        parts = [of_file(m, level) for m in (getattr(variant, "parts", ()) or (variant.model,))]
        return {**max(parts, key=lambda r: metric.degradation(fp32_judged[metric.name], r[metric.name])),
                "agreement": min(r["agreement"] for r in parts)}

    reference = predict_file(fp32, feeds.arrays, SessionConfig(graph_optimization_level="basic"))
    fp32_judged = judged(reference)
    values = {(v.name, level): worst(v, level) for v in variants for level in levels}
    how = (f"{metric.name} on {feeds.description} (full-sequence forward, empty past; a prompt/decode split graph: each of its "
           "two parts so, the worse counting, since a full-sequence forward runs only its prompt part); the rows' accuracy is "
           "top-1 agreement with the fp32 graph")
    return fp32_judged, values, how


def metric_problems(ctx: Context, value: float | None, fp32_value: float | None) -> list[str]:
    """The task metric's quantize budget (quantize_perplexity_increase_pct) broken by `value`, if so."""
    metric = ctx.metric
    budget_name = f"quantize_{metric.degradation_name}"
    budget = getattr(ctx.profile.budgets, budget_name, None)
    if value is None or fp32_value is None:
        return [f"{metric.name} not available"]
    worse = metric.degradation(fp32_value, value)
    if budget is not None and worse > budget:
        return [f"{metric.name} {value:.4g} is {worse:.2f}% above fp32's {fp32_value:.4g} > {budget_name} {budget}"]
    return []


def prompt_pass(ctx: Context, fp32: Path, keep: bool = False) -> tuple[dict[str, np.ndarray], str] | None:
    """The bench's TimeToFirstToken feed (edgekd.perf.decoder: recipe.bench.prompt_tokens from the
    first evaluation row, empty past; `keep`: every candidate has the logits_to_keep input, fed 1 as
    the bench does) and what it is; None where the bench's decoder scenarios cannot drive the graph
    (the tuner then ranks by the decode step alone)."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds
    from edgekd.perf.decoder import (
        DecoderError,
        Subject,
        decoder_io,
        make_prompt,
        step_feed,
    )

    session = open_session(fp32)
    try:
        io = decoder_io(session, ctx.model_inputs)
        if io is None:
            return None
        subject = Subject(session, fp32, ctx.model_inputs, ctx.eval_feeds.arrays, "the tuner")
        prompt = make_prompt(subject, io, ctx.profile.recipe.bench, ctx.max_positions)  # the fused graphs' caches end there
    except DecoderError:
        return None
    feed = complete_feeds(session, step_feed(io, prompt.ids, None, prompt.ids.shape[1]))
    if keep:
        return {**feed, KEEP: np.ones(1, np.int64)}, f"{prompt.note}, the last position's logits only ({KEEP} 1)"
    return feed, prompt.note


def keep_logits(ctx: Context, fp32: Path, out: Path) -> tuple[Path, list[str]]:
    """`fp32` with the logits_to_keep input (edgekd.graph.logits_to_keep) written into `out`, used when
    it gives fp32's outputs without the input and fp32's last logits with it fed 1 on the first
    evaluation row; else `fp32`, with a note why not."""
    from edgekd.graph.graph_edit import NotFusable, verify
    from edgekd.graph.logits_to_keep import add_logits_to_keep, last_logits_gap

    path, prompt = out / f"{fp32.stem}_keep.onnx", ctx.eval_feeds.first()
    try:
        rewrite = add_logits_to_keep(fp32, path)
        verify(fp32, path, [prompt])
        gap = last_logits_gap(fp32, path, prompt)
        if gap > 1e-5:
            raise NotFusable(f"its last logits differ by {gap:.1e} (relative) from fp32's")
    except NotFusable as e:
        path.unlink(missing_ok=True)
        return fp32, [f"{KEEP} not added (every prompt pass computes the head for all positions): {e}"]
    return path, [f"every decoder variant is made from {path.name}: {fp32.name} with the {rewrite.describe()}; checked exact on the "
                  f"first evaluation row (all positions unfed, the last one fed 1: within {gap:.1e})"]


def generation(ctx: Context, note: str, rows: list[dict[str, Any]], samples: list[list[float]], runs: int) -> str:
    """Add to each timed candidate's row (`rows`, in the order the prompt passes were timed: `samples`,
    `runs` per round, on the sessions its decode step was timed on, edgekd.backends.ort.prune.measure)
    ttft_p90_ms, generation_ms = ttft_p90_ms + recipe.bench.decode_tokens x the decode step's p90 (the
    bench's prompt-then-N-tokens generation: what the tuner ranks a decoder by) and a broken ttft_ms
    budget. `note`: what the prompt is (prompt_pass). Returns how."""
    cfg, bench, budget = ctx.profile.recipe.tune, ctx.profile.recipe.bench, ctx.profile.budgets.ttft_ms
    for row, times in zip(rows, samples):
        row["ttft_p90_ms"] = float(np.percentile(times, 90))
        row["generation_ms"] = row["ttft_p90_ms"] + bench.decode_tokens * row["p90_ms"]
        if budget is not None and row["ttft_p90_ms"] > budget:
            row["problems"].append(f"ttft p90 {row['ttft_p90_ms']:.4g} ms > ttft_ms {budget}")
    return (f"the prompt pass (time to first token) of each: {note}, empty past, {cfg.rounds} interleaved rounds of {runs} "
            f"runs after 1 warm-up run, on the sessions its decode step was timed on, ttft_p90_ms pooled; rows ranked by "
            f"generation_ms = ttft_p90_ms + {bench.decode_tokens} (recipe.bench.decode_tokens) x the decode step's p90")


def prompt_runs(ctx: Context) -> int:
    """Timed prompt passes per full tuning round: recipe.bench.ttft_runs over the rounds, at least 1."""
    return max(1, ctx.profile.recipe.bench.ttft_runs // ctx.profile.recipe.tune.rounds)
