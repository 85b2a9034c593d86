"""The device figures a target file's `[device]` table gives, for latency estimates.

A device is peak rates per precision, a memory bandwidth, the fraction of each that real kernels
reach, and fixed per-node / per-inference costs. A host-CPU target gives its peak per core per
clock instead (`host_relative = true`); the cores and clock are read from this host when an estimate
is made, and the estimate records them. A device may name a `[device.fallback]` that runs the nodes
the accelerator cannot (DLA -> Jetson GPU, HTP -> phone CPU), with a cost per switch.

Units are in the names: tera-ops/s (1 MAC = 2 ops), GB/s (10^9 bytes/s), microseconds.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# the op classes of edgekd.analysis.graph (its table maps op types to them; a test keeps them equal)
OP_CLASSES = ("conv", "depthwise", "gemm", "pool", "norm", "activation", "elementwise", "data_movement", "quant",
              "quant_axis", "other")
PRECISIONS = ("int8", "fp16", "fp32")
Precision = Literal["int8", "fp16", "bf16", "fp32"]
EfficiencyKey = Literal["default", "conv", "depthwise", "gemm", "pool", "norm", "activation", "elementwise", "data_movement",
                        "quant", "quant_axis", "other"]
ELEMENT_BYTES = {"int8": 1, "fp16": 2, "fp32": 4}
EFFICIENCY_KEYS = ("default", *OP_CLASSES)  # EfficiencyKey spelled out (a test keeps them equal)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceUnit(_Strict):
    """Figures shared by an accelerator and its fallback."""

    name: str = Field(min_length=1)
    compute_efficiency: dict[EfficiencyKey, float] = Field(
        description="fraction of peak a real kernel reaches, per op class; classes left out use 'default'")
    bandwidth_efficiency: float = Field(gt=0, le=1, description="fraction of memory_bandwidth a real kernel reaches")
    stream_efficiency: dict[EfficiencyKey, float] = Field(
        default_factory=dict, description="per op class, the fraction of memory_bandwidth its memory-bound kernels "
                                          "reach (vector math of exp/erf/tanh, strided layouts); classes left out use "
                                          "bandwidth_efficiency")
    layer_overhead_us: float = Field(ge=0, description="fixed cost per executed node (kernel launch, dispatch)")

    @model_validator(mode="after")
    def _efficiencies(self) -> "DeviceUnit":
        if "default" not in self.compute_efficiency:
            raise ValueError("compute_efficiency needs a 'default' entry (used for op classes not listed)")
        bad = {k: v for k, v in self.compute_efficiency.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"compute_efficiency values must be in (0, 1]; got {bad}")
        bad = {k: v for k, v in self.stream_efficiency.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"stream_efficiency values must be in (0, 1]; got {bad}")
        return self


def _check_peaks(peaks: dict[str, float] | None, key: str) -> None:
    if peaks is not None:
        if not peaks:
            raise ValueError(f"{key} needs at least one precision ({', '.join(PRECISIONS)})")
        bad = {k: v for k, v in peaks.items() if not v > 0}
        if bad:
            raise ValueError(f"{key} values must be > 0; got {bad}")


class FallbackModel(DeviceUnit):
    """The unit that runs what the accelerator cannot; fixed figures only (no host-relative peak)."""

    peak_tops: dict[Precision, float] = Field(description="dense tera-ops/s per precision")
    memory_bandwidth_gbs: float = Field(gt=0)
    switch_overhead_us: float = Field(ge=0, description="cost of each accelerator <-> fallback transition")

    @model_validator(mode="after")
    def _peaks(self) -> "FallbackModel":
        _check_peaks(self.peak_tops, "fallback.peak_tops")
        return self


class DeviceModel(DeviceUnit):
    """`[device]` of a target file. Either fixed peaks (`peak_tops`, `memory_bandwidth_gbs`) or,
    with `host_relative = true`, peaks per core per clock scaled by this host's cores and clock."""

    host_relative: bool = False
    peak_tops: dict[Precision, float] | None = Field(None, description="dense tera-ops/s per precision")
    memory_bandwidth_gbs: float | None = Field(None, gt=0)
    peak_ops_per_cycle_per_core: dict[Precision, float] | None = Field(
        None, description="host_relative: ops (2 per MAC) one core retires per clock at peak")
    memory_bandwidth_bytes_per_cycle_per_core: float | None = Field(
        None, gt=0, description="host_relative: cache bandwidth one core sustains per clock")
    cores: int | None = Field(None, ge=1, description="host_relative: fix the core count instead of reading the host")
    clock_mhz: float | None = Field(None, gt=0, description="host_relative: fix the clock instead of reading the host")
    invoke_overhead_us: float = Field(0.0, ge=0, description="fixed cost per inference (runtime call, I/O copies)")
    cache_mb: float | None = Field(
        None, gt=0, description="weights up to this size stay in cache between inferences; larger ones are read "
                                "from DRAM every inference (host_relative: default this host's last-level cache)")
    dram_bandwidth_gbs: float | None = Field(None, gt=0, description="DRAM bandwidth for weights that do not fit cache_mb")
    dram_bandwidth_bytes_per_cycle_per_core: float | None = Field(
        None, gt=0, description="host_relative: DRAM bandwidth one core sustains per clock")
    runtime_graph: Literal["exported", "onnxruntime-basic", "onnxruntime-extended", "onnxruntime-all"] = Field(
        "exported", description="the graph costed: the exported one, with the fusions below; or the one ONNX Runtime's "
                                "CPU EP runs after its graph optimizations at that level (its own fusions, the Q/DQ "
                                "nodes it left, its layouts), where the device runs ONNX Runtime and it is installed")
    fuse_activations: bool = Field(True, description="activations and BatchNorm right after a conv/gemm run inside it")
    fuse_matmul_bias: bool = Field(True, description="a MatMul followed by an Add of a bias runs as one GEMM")
    fuse_attention: bool = Field(False, description="MatMul Q·Kᵀ, scale, mask, Softmax, MatMul ·V run as one fused "
                                                    "attention kernel (TensorRT's MHA fusion)")
    fallback: FallbackModel | None = None

    @model_validator(mode="after")
    def _peaks(self) -> "DeviceModel":
        _check_peaks(self.peak_tops, "peak_tops")
        _check_peaks(self.peak_ops_per_cycle_per_core, "peak_ops_per_cycle_per_core")
        if self.host_relative:
            if self.peak_tops is not None:
                raise ValueError("host_relative = true takes peak_ops_per_cycle_per_core, not peak_tops")
            if self.peak_ops_per_cycle_per_core is None:
                raise ValueError("host_relative = true needs peak_ops_per_cycle_per_core")
            if (self.memory_bandwidth_gbs is None) == (self.memory_bandwidth_bytes_per_cycle_per_core is None):
                raise ValueError("host_relative = true needs exactly one of memory_bandwidth_gbs or "
                                 "memory_bandwidth_bytes_per_cycle_per_core")
        else:
            host_only = ("peak_ops_per_cycle_per_core", "memory_bandwidth_bytes_per_cycle_per_core", "cores", "clock_mhz",
                         "dram_bandwidth_bytes_per_cycle_per_core")
            extra = [k for k in host_only if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply with host_relative = true")
            if self.peak_tops is None or self.memory_bandwidth_gbs is None:
                raise ValueError("a device needs peak_tops and memory_bandwidth_gbs (or host_relative = true "
                                 "with per-core-per-cycle figures)")
        if self.dram_bandwidth_gbs is not None and self.dram_bandwidth_bytes_per_cycle_per_core is not None:
            raise ValueError("give one of dram_bandwidth_gbs or dram_bandwidth_bytes_per_cycle_per_core")
        return self

    @property
    def precisions(self) -> tuple[str, ...]:
        return tuple(sorted((self.peak_tops or self.peak_ops_per_cycle_per_core or {}).keys()))

