"""An OpenVINO engine chosen by the x86 tuner: the IR written into the build's engine/ folder (what
evaluate, bench and the deploy bundle load), from the chosen variant (an ONNX graph OpenVINO reads,
or NNCF's INT8 IR)."""
from __future__ import annotations

from pathlib import Path

from edgekd.backends.openvino.runtime import save_ir
from edgekd.common.fsutil import atomic_copy

ENGINE_XML = "engine.xml"  # its weights: engine.bin beside it


def write_engine(model: Path, engine_dir: Path) -> tuple[list[Path], str]:
    """The engine IR in `engine_dir` from the chosen variant `model`: an IR is copied (its .bin with it),
    an ONNX graph is converted by OpenVINO (weights kept fp32). Returns the files and how."""
    xml = engine_dir / ENGINE_XML
    if model.suffix == ".xml":
        atomic_copy(model, xml)
        atomic_copy(model.with_suffix(".bin"), xml.with_suffix(".bin"))
        return [xml, xml.with_suffix(".bin")], f"the OpenVINO IR {model.name} as the tuner measured it"
    return save_ir(model, xml), f"{model.name} converted to an OpenVINO IR (ov.save_model, fp32 weights kept)"


def size_mb(files: list[Path]) -> float:
    """The engine's size: every file of it (an IR is its .xml and .bin), MB = 10^6 bytes."""
    return sum(p.stat().st_size for p in files) / 1e6
