"""A profile's [budgets]: the limits every build checks after each stage (edgekd.pipeline.budgets
holds the rules that measure them); kept beside config/models.py, which holds the rest of a profile."""
from __future__ import annotations

from pydantic import Field

from edgekd.config.strict import Strict


class Budgets(Strict):
    """Limits checked after each stage. A budget left out is reported as 'no budget', except three
    correctness checks that hold whatever the team's budgets: the export parity tolerance (1e-4),
    the target's quantization rules (0 violations) and nodes nothing on the target runs (0).
    Quality budgets follow the task's metric: `*_accuracy_drop_pt` (points, for tasks measured by
    accuracy) and `*_perplexity_increase_pct` (percent of the perplexity before, for tasks measured
    by perplexity); a build checks those of its task's metric only."""

    distill_accuracy_drop_pt: float | None = Field(None, ge=0, description="teacher - student (torch)")
    distill_perplexity_increase_pct: float | None = Field(None, ge=0, description="student (torch) over teacher, % of the teacher's")
    export_parity_max_abs_diff: float | None = Field(1e-4, gt=0, description="ONNX Runtime vs torch logits")
    export_accuracy_drop_pt: float | None = Field(None, ge=0, description="student (torch) - ONNX fp32")
    export_perplexity_increase_pct: float | None = Field(None, ge=0, description="ONNX fp32 over student (torch), % of the student's")
    quantize_accuracy_drop_pt: float | None = Field(None, ge=0, description="ONNX fp32 - INT8 ONNX")
    quantize_perplexity_increase_pct: float | None = Field(None, ge=0, description="INT8 ONNX over ONNX fp32, % of the fp32's")
    quantize_rule_violations: int | None = Field(0, ge=0, description="Q/DQ nodes that break the target's quantization rules")
    fallback_nodes_pct: float | None = Field(None, ge=0, le=100, description="nodes off the accelerator, % of all")
    fallback_macs_pct: float | None = Field(None, ge=0, le=100, description="MACs off the accelerator, % of all")
    unsupported_nodes: int | None = Field(0, ge=0, description="nodes nothing on the target can run")
    overall_accuracy_drop_pt: float | None = Field(None, ge=0, description="teacher - engine")
    overall_perplexity_increase_pct: float | None = Field(None, ge=0, description="engine over teacher, % of the teacher's")
    size_mb: float | None = Field(None, gt=0, description="deployed model file size")
    latency_p90_ms: float | None = Field(None, gt=0, description="engine p90 at batch 1")
    # decoders (TimeToFirstToken / DecodeTokensPerSecond of the bench stage); checked where the bench measured them
    ttft_ms: float | None = Field(None, gt=0, description="decoders: engine time to first token, p90 of the prompt pass at "
                                  "recipe.bench.prompt_tokens (shortened to fit the model's positions; the report states the length)")
    decode_tokens_per_s: float | None = Field(None, gt=0, description="decoders: a floor: engine greedy decode tokens/s at batch 1 "
                                              "(recipe.bench.decode_tokens after the prompt)")
    peak_memory_mb: float | None = Field(None, gt=0, description="peak resident memory (VmHWM, MiB) of the bench worker process")
    # the three decoder budgets are also checked at the search stage for [student.search] family = "decoder"
