"""The runner seam of the x86 engine candidates: one `Runner` (run a name -> array feed) per runtime an
x86 candidate may use (ONNX Runtime's CPU provider, OpenVINO's CPU plugin), so that the tuner's
judge, its timing worker and the bench worker treat every candidate alike. Polygraphy's runners are
the model (backend/base/runner.py: infer_impl runs one feed dict)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union

import numpy as np

from edgekd.config.target import SessionConfig

if TYPE_CHECKING:
    from edgekd.backends.openvino.settings import OpenVinoSettings

ONNXRUNTIME, OPENVINO = "onnxruntime", "openvino"
RUNTIMES = (ONNXRUNTIME, OPENVINO)
Settings = Union[SessionConfig, "OpenVinoSettings"]


class Runner(Protocol):
    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class OrtRunner:
    """An ONNX Runtime CPU session as a Runner. A decoder whose attention is GroupQueryAttention keeps
    its cache in one buffer per layer, past and present alike (edgekd.backends.ort.kv_buffers), as
    onnxruntime-genai runs it: `kv` is then set, and its presents are views valid until the next run."""

    def __init__(self, model: Path, cfg: SessionConfig) -> None:
        from edgekd.backends.ort.kv_buffers import KvBuffers
        from edgekd.backends.ort.session import open_session

        self.session = open_session(Path(model), cfg)
        self.kv = KvBuffers.for_session(self.session, Path(model))

    def run(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if self.kv is not None:
            return self.kv.run(feed)
        return self.session.run(None, feed)  # a dict: what every caller passes


def settings_from(runtime: str, data: Mapping[str, Any]) -> Settings:
    """A candidate's settings from their JSON (the tuning record's "session", engine.json's "session")."""
    if runtime == OPENVINO:
        from edgekd.backends.openvino.settings import OpenVinoSettings

        return OpenVinoSettings.model_validate(dict(data))
    return SessionConfig.model_validate(dict(data))


def open_runner(runtime: str, model: Path, settings: Settings) -> Runner:
    if runtime == OPENVINO:
        from edgekd.backends.openvino.runtime import OpenVinoRunner

        return OpenVinoRunner(Path(model), settings)  # type: ignore[arg-type]
    return OrtRunner(Path(model), settings)  # type: ignore[arg-type]


def predict(runtime: str, model: Path, feeds: Mapping[str, np.ndarray], settings: Settings) -> np.ndarray:
    """The first output for every sample of `feeds` (named inputs, samples on axis 0)."""
    if runtime == OPENVINO:
        from edgekd.backends.openvino.runtime import predict_file

        return predict_file(Path(model), feeds, settings)  # type: ignore[arg-type]
    from edgekd.backends.ort.session import predict_file as ort_predict_file

    return ort_predict_file(Path(model), feeds, settings)  # type: ignore[arg-type]


def numerics_key(settings: Settings) -> str:
    """The part of the settings that can change a candidate's outputs (its accuracy is judged once per
    key): ONNX Runtime's graph optimization level, OpenVINO's inference precision; threads do not."""
    if isinstance(settings, SessionConfig):
        return settings.graph_optimization_level
    return settings.inference_precision_hint


def threads(settings: Settings) -> int:
    if isinstance(settings, SessionConfig):
        from edgekd.backends.ort.session import resolved_threads

        return resolved_threads(settings)
    return settings.threads()


def describe(runtime: str, settings: Settings) -> str:
    """The runtime, its version and the settings, for a measurement's provenance."""
    if runtime == OPENVINO:
        from edgekd.backends.openvino.runtime import description

        return description(settings)  # type: ignore[arg-type]
    from edgekd.backends.ort.session import runtime_description

    return runtime_description(settings)  # type: ignore[arg-type]
