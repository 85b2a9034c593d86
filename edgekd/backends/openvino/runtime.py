"""OpenVINO's CPU plugin: read an ONNX graph or an IR, compile it with a candidate's settings, run
name -> array feeds (the Runner seam the tuner, the bench worker and evaluation share), save an IR."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.openvino.settings import OpenVinoSettings
from edgekd.common.toolchain import require

RUNTIME = "openvino"
DEVICE = "CPU"
INSTALL = "pip install 'edgekd[openvino]' (openvino and nncf)"


def missing() -> str | None:
    """Why OpenVINO cannot be used here (the package is not importable), or None: the seam the tuner
    asks before it makes OpenVINO candidates."""
    try:
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"OpenVINO candidates left out: the Python package 'openvino' is not importable ({exc}); {INSTALL}"
    return None


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One ov.Core per process (it holds the plugins; making one costs tens of milliseconds)."""
    return require("openvino", "OpenVINO engines").Core()


def read(model: Path) -> Any:
    """An ov.Model from an ONNX file or an IR (.xml with its .bin beside it)."""
    return core().read_model(str(model))


def version() -> str:
    return require("openvino", "OpenVINO engines").__version__.split("-")[0]


def description(settings: OpenVinoSettings | None = None) -> str:
    text = f"OpenVINO {version()} {DEVICE} plugin"
    return text if settings is None else f"{text}, {settings.describe()}"


class OpenVinoRunner:
    """A model compiled for the CPU with `settings`. Each new set of input shapes gets its own compiled
    model, reshaped to those static shapes (OpenVINO's CPU plugin is fastest on static shapes; a timed
    candidate always sees one shape). `run(feed)` returns the outputs in the model's order."""

    def __init__(self, model: Path, settings: OpenVinoSettings) -> None:
        self.model_path, self.settings = Path(model), settings
        self._model = read(self.model_path)
        self._compiled: dict[tuple[tuple[str, tuple[int, ...]], ...], Any] = {}

    def _request(self, feed: Mapping[str, np.ndarray]) -> Any:
        key = tuple(sorted((name, tuple(a.shape)) for name, a in feed.items()))
        if key not in self._compiled:
            model = self._model.clone()
            model.reshape({name: list(shape) for name, shape in key})
            self._compiled[key] = core().compile_model(model, DEVICE, self.settings.properties()).create_infer_request()
        return self._compiled[key]

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        request = self._request(feed)
        request.infer(feed)
        return [request.get_output_tensor(i).data.copy() for i in range(len(request.model_outputs))]

    def input_names(self) -> list[str]:
        return [p.get_any_name() for p in self._model.inputs]


def predict_file(model: Path, feeds: Mapping[str, np.ndarray], settings: OpenVinoSettings, batch_size: int = 256) -> np.ndarray:
    """The first output for every sample of `feeds` (named inputs, samples on axis 0), in batches."""
    runner = OpenVinoRunner(model, settings)
    count = len(next(iter(feeds.values())))
    return np.concatenate([runner.run({n: a[i:i + batch_size] for n, a in feeds.items()})[0] for i in range(0, count, batch_size)])


def save_ir(model: Path, xml: Path, compress_to_fp16: bool = False) -> list[Path]:
    """Write `model` (ONNX or IR) as an IR: `xml` and the .bin beside it. fp32 weights stay fp32 unless
    `compress_to_fp16` (NNCF's INT8 weights are stored as int8 either way). Returns both files."""
    ov = require("openvino", "OpenVINO engines")
    ov.save_model(read(model), str(xml), compress_to_fp16=compress_to_fp16)
    return [xml, xml.with_suffix(".bin")]
