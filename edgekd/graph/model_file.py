"""A model file a user gives: checked before anything is written.

An ONNX model may keep its weights in external-data files that it names by a `location` relative to
its own folder. A location that is absolute, holds `..`, or resolves (through symlinks) outside that
folder would make edgekd read, hash and copy an arbitrary file of this host: such a model is refused."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from edgekd.errors import ConfigError

EXTERNAL_HINT = "keep the model's external-data files in its own folder, named relative to it (onnx.save(..., location='weights.bin'))"


def check_model_file(model: Path) -> Path:
    """`model` if it is a readable, valid ONNX file whose external data (if any) stays in its folder;
    else ConfigError (exit 2) naming it."""
    if not model.is_file():
        raise ConfigError(f"model file {model} not found", "give the path to an .onnx file")
    try:
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
    except Exception as exc:  # onnx raises several types for unreadable/invalid files
        raise ConfigError(f"{model}: not a valid ONNX model ({_first_line(exc)})", "give an .onnx file exported by torch.onnx or similar") from None
    check_external_data(model, proto)
    initializers = {t.name for t in proto.graph.initializer}
    if not [i for i in proto.graph.input if i.name not in initializers]:
        raise ConfigError(f"{model}: the graph has no inputs (every value is a constant): there is nothing to feed, check or time",
                          "export the model with its real inputs (torch.onnx.export(model, example_inputs, ...))")
    try:
        onnx.checker.check_model(str(model))
    except Exception as exc:  # noqa: BLE001 - the checker's ValidationError and protobuf's errors
        raise ConfigError(f"{model}: not a valid ONNX model ({_first_line(exc)})", "give an .onnx file exported by torch.onnx or similar") from None
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def external_data_locations(proto: Any) -> list[str]:
    """The `location` of every tensor of the model (initializers, attributes, subgraphs) whose data is external."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return sorted({entry.value for tensor in _get_all_tensors(proto) if uses_external_data(tensor)
                   for entry in tensor.external_data if entry.key == "location"})


def check_external_data(model: Path, proto: Any = None) -> list[str]:
    """The model's external-data locations, each a relative path inside the model's folder; a
    location that is absolute, holds `..` or resolves outside the folder is a ConfigError."""
    if proto is None:
        import onnx

        proto = onnx.load(str(model), load_external_data=False)
    folder = Path(model).parent.resolve()
    locations = external_data_locations(proto)
    for location in locations:
        parts = set(PurePosixPath(location).parts) | set(PureWindowsPath(location).parts)
        outside = (not location or "\0" in location or os.path.isabs(location) or PureWindowsPath(location).is_absolute()
                   or bool(PureWindowsPath(location).drive) or ".." in parts)
        if not outside:
            target = (folder / location).resolve()
            outside = target != folder and folder not in target.parents
        if outside:
            raise ConfigError(f"{model}: external-data location {location!r} points outside the model's folder {folder}", EXTERNAL_HINT)
    return locations


def has_external_data(model: Path) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(model), load_external_data=False).graph.initializer)
