"""Target (targets/*.toml): what the hardware is and which runtime runs the student on it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgekd.config.device import DeviceModel
from edgekd.config.qnn import QnnConfig
from edgekd.config.strict import Strict
from edgekd.config.tensorrt import TensorRTConfig

Runtime = Literal["onnxruntime-cpu", "qnn-htp", "tensorrt"]
TENSORRT_OPSETS = (9, 20)  # onnx-tensorrt docs/operators.md
MAX_THREADS = 4096  # a thread count above this is a typo whatever the host; the host's own cores bound it when a session opens


class HostMatch(Strict):
    """For host-CPU targets: the CPU flags (Linux /proc/cpuinfo names) the target needs."""

    cpu_flags: list[str] = Field(default_factory=list)


class SessionConfig(Strict):
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = Field(0, ge=0, le=MAX_THREADS, description="0: every core this process may use (more than the "
                                      "host's cores is refused where a session opens: edgekd.common.host)")
    inter_op_num_threads: int = Field(1, ge=0, le=MAX_THREADS)
    execution_mode: Literal["sequential", "parallel"] = "sequential"


class WeightOnlySpec(Strict):
    """One MatMulNBits weight-only candidate (edgekd.graph.weight_only): bits, block size along K,
    symmetric blocks, ORT's accuracy_level (None: its default; 4: int8 activations in the kernel), and
    whether the token embedding table is quantized too (4-bit, GatherBlockQuantized)."""

    bits: Literal[4, 8] = 4
    block_size: int = Field(32, ge=16, le=256)
    symmetric: bool = True
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = None
    embedding: bool = False

    @model_validator(mode="after")
    def _embedding_bits(self) -> "WeightOnlySpec":
        if self.embedding and self.bits != 4:
            raise ValueError("embedding = true takes bits = 4 (onnxruntime.quantization quantizes a Gather's table to 4 bits only)")
        return self

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("block_size is a power of two (16 ... 256)")
        return value


class QdqRecipe(Strict):
    """A static Q/DQ recipe the tuner quantizes and times beside [quantize]'s (edgekd.backends.ort.recipes):
    the activation type and reduce_range (7-bit weights); weights stay int8 as [quantize] says."""

    activation_type: Literal["int8", "uint8"] = "int8"
    reduce_range: bool = False


class TuneSpace(Strict):
    """Engine settings the compile stage may try on this target (ONNX Runtime CPU): each list is
    one axis; every combination is a candidate. An empty [tune] keeps the [session] settings."""

    precisions: list[Literal["fp32", "int8"]] = Field(default_factory=lambda: ["int8"])
    quant_formats: list[Literal["qdq", "qoperator", "dynamic"]] = Field(
        default_factory=lambda: ["qdq"], description="int8 variants: static Q/DQ, static QOperator (QLinear* ops), and "
        "'dynamic' (quantize_dynamic: int8 weights, activations quantized at run time; tried for transformer graphs only)")
    weight_only: list[WeightOnlySpec] = Field(default_factory=list, description="MatMulNBits weight-only variants "
                                              "(int4/int8 weights, float activations), tried for decoders with a KV cache")
    intra_op_num_threads: list[int] = Field(default_factory=list, description="0: every usable core; empty: [session]'s")
    graph_optimization_levels: list[Literal["disable", "basic", "extended", "all"]] = Field(default_factory=list)
    execution_modes: list[Literal["sequential", "parallel"]] = Field(default_factory=list)
    runtimes: list[Literal["onnxruntime", "openvino"]] = Field(
        default_factory=lambda: ["onnxruntime"], min_length=1, description="whose engines are candidates: ONNX Runtime's "
        "CPU provider and/or OpenVINO's CPU plugin (fp32 and NNCF INT8, edgekd.backends.openvino; KV-cache decoders stay on "
        "ONNX Runtime)")
    qdq_recipes: list[QdqRecipe] = Field(default_factory=list, description="more static Q/DQ recipes to quantize and time "
                                         "(activation type, reduce_range) beside [quantize]'s: which is fastest differs by CPU class")

    @field_validator("intra_op_num_threads")
    @classmethod
    def _threads(cls, value: list[int]) -> list[int]:
        if any(v < 0 or v > MAX_THREADS for v in value):
            raise ValueError(f"thread counts are >= 0 and <= {MAX_THREADS} (0: every usable core)")
        return value


class TargetQuantize(Strict):
    """The Q/DQ recipe the target's runtime needs; the quantized graph is checked against it."""

    format: Literal["qdq"] = "qdq"
    activation_type: Literal["int8", "uint8", "uint16"] = "int8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = Field(False, description="every activation zero point 0 (TensorRT)")
    symmetric_weights: bool = Field(True, description="every weight zero point 0")
    quantize_bias: bool = Field(True, description="int32 bias Q/DQ (TensorRT rejects them: false keeps float biases)")
    static_batch: int | None = Field(None, ge=1, description="fix the batch dimension (HTP needs static shapes)")
    transformer_fusion: bool = Field(False, description="onnxruntime-cpu: fuse transformer graphs (Attention, "
                                     "SkipLayerNormalization, BiasGelu, EmbedLayerNormalization: onnxruntime.transformers) "
                                     "before quantizing, when the fused graph matches the given one (edgekd.backends.ort.transformer)")


class Target(Strict):
    description: str
    runtime: Runtime
    aliases: list[str] = Field(default_factory=list)
    precisions: list[Literal["fp32", "fp16", "int8"]] = Field(min_length=1)
    opset: int = Field(18, ge=13, le=23)
    toolchain: dict[str, str] = Field(default_factory=dict, description="host distribution -> minimum version")
    host: HostMatch = HostMatch()
    session: SessionConfig = SessionConfig()
    tune: TuneSpace = TuneSpace()
    quantize: TargetQuantize = TargetQuantize()
    qnn: QnnConfig | None = None
    tensorrt: TensorRTConfig | None = None
    device: DeviceModel | None = Field(None, description="figures for latency estimates (edgekd.analysis.device)")

    @model_validator(mode="after")
    def _runtime_sections(self) -> Target:
        if self.tune != TuneSpace() and self.runtime != "onnxruntime-cpu":
            raise ValueError(f"[tune] applies to runtime 'onnxruntime-cpu' only (the {self.runtime} engine is tuned by its own builder on the device)")
        need = {"qnn-htp": "qnn", "tensorrt": "tensorrt"}.get(self.runtime)
        for section in ("qnn", "tensorrt"):
            if section == need and getattr(self, section) is None:
                raise ValueError(f"runtime '{self.runtime}' needs a [{section}] table")
            if section != need and getattr(self, section) is not None:
                raise ValueError(f"[{section}] does not apply to runtime '{self.runtime}'")
        if self.runtime != "onnxruntime-cpu" and self.device is None:
            raise ValueError(f"runtime '{self.runtime}' runs on a device edgekd cannot measure here: give [device] figures for estimates")
        if self.tune != TuneSpace() and set(self.tune.precisions) - set(self.precisions):
            raise ValueError(f"[tune] precisions {self.tune.precisions} must be among the target's precisions {self.precisions}")
        problems = self._quantize_problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _quantize_problems(self) -> list[str]:
        q = self.quantize
        problems = []
        if q.transformer_fusion and self.runtime != "onnxruntime-cpu":
            problems.append(f"[quantize] transformer_fusion applies to runtime 'onnxruntime-cpu' only (its fused ops are ONNX "
                            f"Runtime CPU contrib ops, which {self.runtime} does not run)")
        if self.runtime == "qnn-htp":
            if q.activation_type != self.qnn.activation_type or q.weight_type != self.qnn.weight_type:
                problems.append(f"[quantize] types ({q.activation_type}/{q.weight_type}) differ from [qnn] "
                                f"({self.qnn.activation_type}/{self.qnn.weight_type})")
            if q.static_batch is None:
                problems.append("QNN HTP needs static shapes: set [quantize] static_batch")
        elif self.runtime == "tensorrt":
            if not (q.activation_type == q.weight_type == "int8" and q.symmetric_activations and q.symmetric_weights):
                problems.append("TensorRT takes only symmetric INT8 Q/DQ: activation_type = weight_type = 'int8', "
                                "symmetric_activations = symmetric_weights = true")
            if q.quantize_bias:
                problems.append("TensorRT rejects INT32 bias Q/DQ: set [quantize] quantize_bias = false")
            if not TENSORRT_OPSETS[0] <= self.opset <= TENSORRT_OPSETS[1]:
                problems.append(f"TensorRT's ONNX parser takes opsets {TENSORRT_OPSETS[0]}-{TENSORRT_OPSETS[1]}, not {self.opset}")
        return problems
