"""The settings an OpenVINO CPU candidate is compiled with (its "session" in the tuning record and
engine.json): OpenVINO properties, see docs.openvino.ai "CPU device" / "Performance hints"."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgekd.common.toolchain import cpu_flags, usable_cores
from edgekd.config.strict import Strict
from edgekd.config.target import MAX_THREADS

# /proc/cpuinfo flags with which OpenVINO's CPU plugin runs bf16 (AVX-512 BF16, AMX-BF16); elsewhere
# it emulates or refuses bf16, so the bf16 hint is tried only where one of them is present.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class OpenVinoSettings(Strict):
    """PERFORMANCE_HINT LATENCY, NUM_STREAMS 1 (one inference at a time, as the ONNX Runtime candidates),
    INFERENCE_NUM_THREADS (0: every core this process may use) and INFERENCE_PRECISION_HINT, set
    explicitly: on hosts with bf16 OpenVINO's CPU default is bf16, which changes the numerics."""

    inference_num_threads: int = Field(0, ge=0, le=MAX_THREADS)
    inference_precision_hint: Literal["f32", "bf16"] = "f32"
    performance_hint: Literal["LATENCY"] = "LATENCY"
    num_streams: int = Field(1, ge=1, le=MAX_THREADS)

    def threads(self) -> int:
        """The thread count the compiled model gets."""
        return self.inference_num_threads or usable_cores()

    def properties(self) -> dict[str, Any]:
        """The properties for Core.compile_model(model, "CPU", ...)."""
        return {"PERFORMANCE_HINT": self.performance_hint, "NUM_STREAMS": str(self.num_streams),
                "INFERENCE_NUM_THREADS": self.threads(), "INFERENCE_PRECISION_HINT": self.inference_precision_hint}

    def describe(self) -> str:
        return (f"{self.threads()} thread(s), {self.num_streams} stream, hint {self.performance_hint}, "
                f"inference precision {self.inference_precision_hint}")


def host_has_bf16() -> bool:
    return bool(BF16_FLAGS & cpu_flags())


def settings_space(threads: list[int]) -> list[OpenVinoSettings]:
    """One candidate per thread count, each also with the bf16 hint where the host runs bf16: for a
    float graph every op, for an INT8 IR the ops NNCF left in float (Softmax, normalizations, attention
    products, what its ignored scopes keep), which ran up to a quarter faster on an AVX-512 BF16 host
    (MobileNetV2, ViT-Tiny; benchmarks/results/peers_real_findings.md). Numerics change: the judge
    measures each hint's accuracy like any variant's."""
    hints: list[Literal["f32", "bf16"]] = ["f32", "bf16"] if host_has_bf16() else ["f32"]
    return [OpenVinoSettings(inference_num_threads=t, inference_precision_hint=h, num_streams=1) for t in threads for h in hints]
