"""The `[qnn]` table of a target file: how ONNX Runtime's QNN execution provider drives a Hexagon HTP.

Known Snapdragon SoCs (QNN `soc_model` id, HTP architecture), from the QNN EP's own table and tests
(onnxruntime/onnxruntime-qnn, onnxruntime/test/providers/qnn/component/soc_utils_test.cc:
`SocModelFromName("SM8550") == 43  // V73 — Snapdragon 8 Gen 2`, `"SM8650" == 57  // V75 — 8 Gen 3`,
`"SM8750" == 69  // V79 — 8 Elite`) and ExecuTorch's QNN backend
(pytorch/executorch, backends/qualcomm/serialization/qc_schema.py: `SM8550 = 43  # v73`,
`SM8650 = 57  # v75`, `SM8750 = 69  # v79`). Both mirror `Qnn_SocModel_t` in the QNN SDK's QnnTypes.h.
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# soc_model id -> (chip, marketing name, htp_arch)
SOC_MODELS: dict[str, tuple[str, str, str]] = {
    "36": ("SM8450", "Snapdragon 8 Gen 1", "69"),
    "43": ("SM8550", "Snapdragon 8 Gen 2", "73"),
    "57": ("SM8650", "Snapdragon 8 Gen 3", "75"),
    "69": ("SM8750", "Snapdragon 8 Elite", "79"),
}
# the values the QNN EP parses (ParseHtpArchitecture in qnn_execution_provider.cc); anything else
# is only logged as a warning there and silently ignored, so it is rejected here
HTP_ARCHS = ("68", "69", "73", "75", "79", "81")

HtpPerformanceMode = Literal[
    "burst", "balanced", "default", "high_performance", "high_power_saver", "low_balanced",
    "low_power_saver", "power_saver", "sustained_high_performance",
]


class QnnConfig(BaseModel):
    """QNN HTP settings of a target. `provider_options()` gives the QNN EP's provider options
    (without `backend_path`, which depends on the machine: the backend adds it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    htp_arch: str = Field("75", description="Hexagon HTP architecture: 73 (8 Gen 2), 75 (8 Gen 3), 79 (8 Elite)")
    soc_model: str = Field("57", pattern=r"^\d+$", description="QNN SoC model id: 43 (SM8550), 57 (SM8650), 69 (SM8750)")
    activation_type: Literal["uint8", "uint16"] = "uint8"
    weight_type: Literal["uint8"] = "uint8"
    per_channel: bool = Field(True, description="per-channel weight scales (Conv, Gemm, MatMul weights)")
    uint16_activation_ops: tuple[str, ...] = Field(
        (), description="with uint8 activations: these op types read and write uint16 activations (mixed precision, "
                        "edgekd.backends.qnn.quantize); ignored with uint16 activations")
    htp_performance_mode: HtpPerformanceMode = "default"
    htp_graph_finalization_optimization_mode: int = Field(0, ge=0, le=3, description="0 default, 3 slowest prepare / best graph")
    vtcm_mb: int | None = Field(None, ge=1, description="VTCM size in MB; None leaves the backend's default")
    enable_htp_fp16_precision: bool = Field(False, description="run float (non-quantized) nodes in fp16 on the HTP")
    offload_graph_io_quantization: bool = Field(
        True, description="the graph-input Q and graph-output DQ run on the CPU (the QNN EP's default); "
                          "ignored by the EP when CPU fallback is disabled")
    allow_cpu_fallback: bool = Field(True, description="false: a node the HTP cannot run is an error, not a CPU node")

    @model_validator(mode="after")
    def _consistent(self) -> QnnConfig:
        bad = [op for op in self.uint16_activation_ops if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", op)]
        if bad:
            raise ValueError(f"uint16_activation_ops names ONNX op types (e.g. 'LayerNormalization', 'Softmax'), not {bad}")
        if self.htp_arch not in HTP_ARCHS:
            raise ValueError(f"htp_arch '{self.htp_arch}' is not one the QNN EP knows ({', '.join(HTP_ARCHS)})")
        known = SOC_MODELS.get(self.soc_model)
        if known is not None and known[2] != self.htp_arch:
            chip, name, arch = known
            raise ValueError(f"soc_model {self.soc_model} is {chip} ({name}), whose HTP is v{arch}, "
                             f"but htp_arch is '{self.htp_arch}' (the QNN EP would silently use the soc_model)")
        return self

    def describe(self) -> str:
        """e.g. 'QNN HTP v75 (SM8650, Snapdragon 8 Gen 3)'."""
        known = SOC_MODELS.get(self.soc_model)
        soc = f"{known[0]}, {known[1]}" if known else f"soc_model {self.soc_model}"
        return f"QNN HTP v{self.htp_arch} ({soc})"

    def provider_options(self) -> dict[str, str]:
        options = {
            "htp_arch": self.htp_arch,
            "soc_model": self.soc_model,
            "htp_performance_mode": self.htp_performance_mode,
            "htp_graph_finalization_optimization_mode": str(self.htp_graph_finalization_optimization_mode),
            "enable_htp_fp16_precision": "1" if self.enable_htp_fp16_precision else "0",
            "offload_graph_io_quantization": "1" if self.offload_graph_io_quantization else "0",
        }
        if self.vtcm_mb is not None:
            options["vtcm_mb"] = str(self.vtcm_mb)
        return options
