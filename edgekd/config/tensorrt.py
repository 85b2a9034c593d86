"""A target file's `[tensorrt]` table: which TensorRT, which precision, GPU or DLA, build settings.

Facts behind the cross-field rules (../shared/HARDWARE.md, NVIDIA TensorRT docs):
- TensorRT 11 removed trtexec's `--fp16/--int8` and the FP16/INT8 builder flags: every network is
  strongly typed and precision comes from the ONNX tensor types (Q/DQ nodes, casts). edgekd exports
  FP32 and quantizes to INT8 Q/DQ, so a TensorRT 11 target is `precision = "int8"`.
- JetPack 6.1/6.2 ship TensorRT 10.3; no JetPack 6 release ships TensorRT 11.
- TensorRT 11.0-11.4.0 have no DLA on JetPack; 11.4.1 runs DLA on AGX Orin with JetPack >= 7.2.2
  (TensorRT 11.4.1 release notes).
- Jetson modules have at most 2 DLA cores (Orin AGX/NX: 2; Orin Nano: none).
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DLA_ON_TRT11_MIN_VERSION = "11.4.1"
DLA_ON_TRT11_MIN_JETPACK = (7, 2, 2)
_JETPACK = r"^\d+\.\d+(\.\d+)?$"


def version_tuple(text: str) -> tuple[int, ...]:
    """'7.2' -> (7, 2, 0); used to compare JetPack and TensorRT versions."""
    parts = tuple(int(p) for p in re.findall(r"\d+", text))
    return parts + (0,) * (3 - len(parts))


class TensorRTConfig(BaseModel):
    """How a TensorRT target builds and measures its engine (trtexec or the Python API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trt_major: Literal[10, 11] = Field(description="TensorRT major version on the device; the build path differs by it")
    jetpack: str | None = Field(None, pattern=_JETPACK, description="JetPack release of the device, e.g. '6.2'; None off Jetson")
    precision: Literal["int8", "fp16"] = Field("int8", description="what the engine computes in (TRT 11: what the ONNX carries)")
    also_fp16: bool = Field(False, description="TRT 10 with int8: also allow FP16 for layers the Q/DQ graph leaves in float "
                                               "(--fp16); DLA runs only INT8/FP16 layers")
    dla_core: int | None = Field(None, ge=0, le=1, description="run on this DLA core (Jetson: 0 or 1); None: GPU only")
    gpu_fallback: bool = Field(False, description="DLA only: layers DLA cannot run go to the GPU (--allowGPUFallback)")
    workspace_mib: int = Field(1024, ge=1, description="builder workspace pool limit (--memPoolSize=workspace:NM)")
    builder_optimization_level: int = Field(3, ge=0, le=5, description="0 builds fastest, 5 searches most; TensorRT's default is 3")
    use_cuda_graph: bool = Field(False, description="measure with CUDA graphs (--useCudaGraph)")
    use_spin_wait: bool = Field(False, description="busy-wait on GPU events while measuring (--useSpinWait): steadier, more CPU power")
    warmup_ms: int = Field(500, ge=0, description="trtexec --warmUp before timing")
    duration_s: int = Field(10, ge=1, description="trtexec --duration: time the engine for at least this long")
    power_mode: str | None = Field(None, min_length=1, description="informative: the nvpmodel mode the numbers are meant for, e.g. 'MAXN'")

    @model_validator(mode="after")
    def _consistent(self) -> TensorRTConfig:
        problems = [p for p in (self._dla_problem(), self._precision_problem(), self._jetpack_problem()) if p]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _dla_problem(self) -> str | None:
        if self.gpu_fallback and self.dla_core is None:
            return "gpu_fallback applies only to DLA builds: set dla_core (0 or 1) or remove gpu_fallback"
        if self.dla_core is not None and self.jetpack is None:
            return "dla_core needs jetpack: DLA exists only on Jetson (and DRIVE) modules; name the JetPack release"
        if self.dla_core is not None and self.trt_major == 11 and version_tuple(self.jetpack or "0") < DLA_ON_TRT11_MIN_JETPACK:
            return (f"DLA with TensorRT 11 needs TensorRT >= {DLA_ON_TRT11_MIN_VERSION} on JetPack >= 7.2.2 "
                    f"(TensorRT 11.0-11.4.0 have no DLA on Jetson); jetpack is '{self.jetpack}'")
        return None

    def _precision_problem(self) -> str | None:
        if self.trt_major == 11 and self.precision == "fp16":
            return ("TensorRT 11 has no --fp16: precision comes from the ONNX tensor types, and edgekd's "
                    "ONNX is FP32 with INT8 Q/DQ; use precision = 'int8' (or trt_major = 10)")
        if self.also_fp16 and (self.trt_major != 10 or self.precision != "int8"):
            return "also_fp16 applies only to trt_major = 10 with precision = 'int8' (TensorRT 11 has no precision flags)"
        return None

    def _jetpack_problem(self) -> str | None:
        if self.jetpack is not None and self.trt_major == 11 and version_tuple(self.jetpack)[0] < 7:
            return f"JetPack {self.jetpack} does not ship TensorRT 11 (JetPack 6.1/6.2 ship TensorRT 10.3): set trt_major = 10"
        return None

    @property
    def min_trt_version(self) -> str:
        """The oldest TensorRT this configuration can build with."""
        if self.dla_core is not None and self.trt_major == 11:
            return DLA_ON_TRT11_MIN_VERSION
        return f"{self.trt_major}.0.0"

    @property
    def device_description(self) -> str:
        if self.dla_core is None:
            return "GPU"
        return f"DLA core {self.dla_core}" + (" with GPU fallback" if self.gpu_fallback else " (no GPU fallback)")
