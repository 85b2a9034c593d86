"""Capture intermediate activations of a model by name, with forward hooks (no edits to the model).

Layers are named as in `model.named_modules()`: "3" for the fourth child of an nn.Sequential,
"features.2.conv" for a nested one. This is how a project config names the feature layers that
distillation losses compare.
"""
from __future__ import annotations

import difflib
from functools import partial
from types import TracebackType
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from edgekd.errors import ConfigError

_LISTED = 30  # at most this many valid names in an error's hint


class FeatureCapture:
    """Context manager: while open, every forward of `model` leaves the outputs of the named
    submodules in `.features` (path -> tensor, from the latest forward; cleared when the model's
    forward starts, so a layer that did not run is absent). The hooks are removed on exit.

    Tensors are stored as the module returned them: under `torch.no_grad()` (the teacher) they
    carry no graph; otherwise (the student) gradients flow through them into the model. A module
    called more than once in a forward keeps its last output.

        with FeatureCapture(teacher, ["features.2"], source="teacher") as cap, torch.no_grad():
            teacher(x)
        cap.features["features.2"]

    A module that returns a tuple or list whose first element is a tensor (Hugging Face layers such
    as BertLayer: (hidden_states, attentions, ...); an LSTM: (output, (h, c))) leaves that first
    element, its main output.

    Raises ConfigError (at construction) when a path is not a submodule of `model`, naming the
    path and the closest valid names, and (during a forward) when a named module's output is
    neither a tensor nor a tuple/list starting with one."""

    def __init__(self, model: nn.Module, layers: Iterable[str], *, source: str = "model") -> None:
        self.model = model
        self.source = source
        self.layers: list[str] = list(dict.fromkeys(layers))
        modules = dict(model.named_modules())
        for path in self.layers:
            if path not in modules:
                raise _missing(path, [n for n in modules if n], source)
        self._modules = {path: modules[path] for path in self.layers}
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def __enter__(self) -> FeatureCapture:
        if self._handles:
            raise RuntimeError("this FeatureCapture is already open")
        self.features.clear()
        if self.layers:
            self._handles.append(self.model.register_forward_pre_hook(self._clear))
        for path, module in self._modules.items():
            self._handles.append(module.register_forward_hook(partial(self._store, path)))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _clear(self, module: nn.Module, args: Any) -> None:
        self.features.clear()

    def _store(self, path: str, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            output = output[0]  # a Hugging Face layer's (hidden_states, ...): its hidden state
        if not isinstance(output, torch.Tensor):
            raise ConfigError(f"{self.source} layer '{path}' ({type(module).__name__}) outputs a "
                              f"{type(output).__name__}, not a tensor",
                              "name a submodule that returns a tensor or a tuple starting with one (e.g. a conv or activation inside it)")
        self.features[path] = output


def _missing(path: str, valid: list[str], source: str) -> ConfigError:
    near = difflib.get_close_matches(path, valid, n=3, cutoff=0.5)
    message = f"{source} has no submodule '{path}'"
    if near:
        message += f" (closest: {', '.join(near)})"
    if not valid:
        return ConfigError(message, f"the {source} has no submodules; name layers of a model that has them")
    listed = ", ".join(valid[:_LISTED])
    more = f" and {len(valid) - _LISTED} more ([n for n, _ in model.named_modules()] lists them)" if len(valid) > _LISTED else ""
    return ConfigError(message, f"names as in model.named_modules(): {listed}{more}")
