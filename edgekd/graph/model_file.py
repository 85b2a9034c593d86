"""A model file a user gives: checked before anything is written."""
from __future__ import annotations

from pathlib import Path

from edgekd.errors import ConfigError


def check_model_file(model: Path) -> Path:
    """`model` if it is a readable, valid ONNX file; else ConfigError (exit 2) naming it."""
    if not model.is_file():
        raise ConfigError(f"model file {model} not found", "give the path to an .onnx file")
    try:
        import onnx

        onnx.checker.check_model(str(model))
    except Exception as exc:  # onnx raises several types for unreadable/invalid files
        raise ConfigError(f"{model}: not a valid ONNX model ({str(exc).splitlines()[0]})", "give an .onnx file exported by torch.onnx or similar") from None
    return model


def has_external_data(model: Path) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(model), load_external_data=False).graph.initializer)

