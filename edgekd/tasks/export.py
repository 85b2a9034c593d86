"""A task's export contract carried out: torch.onnx for plain modules, optimum-onnx for Hugging
Face models; either way the ONNX inputs and outputs carry the task specs' names and dynamic axes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekd.errors import ConfigError, ToolchainMissing
from edgekd.graph.export import ExportFailed, export_torch, failed, quiet  # noqa: F401  (ExportFailed: what export raises)
from edgekd.tasks.specs import BATCH_AXIS, MAX_BATCH, TensorSpec

if TYPE_CHECKING:
    from edgekd.tasks.base import Task

EXAMPLE_BATCH = 2  # torch.export specializes axes whose example size is 0 or 1
EXAMPLE_LENGTH = 8
ONNX_FILE = "model.onnx"
EXTERNAL_DATA_FILE = "model.onnx_data"  # optimum's name for weights over 2 GB


def dynamic_shapes(specs: tuple[TensorSpec, ...], sizes: dict[str, int]) -> tuple[dict[int, Any], ...]:
    """torch.export Dims for the specs' named axes; one Dim per name, shared by every input that
    has it (so input_ids and attention_mask keep one sequence length)."""
    from torch.export import Dim

    dims = {BATCH_AXIS: Dim(BATCH_AXIS, min=1, max=MAX_BATCH)}
    dims.update({name: Dim(name, min=1, max=size) for name, size in sizes.items()})
    return tuple({axis: dims[name] for axis, name in spec.axes.items()} for spec in specs)


def export_module(model: torch.nn.Module, task: Task, path: Path, opset: int) -> None:
    """torch.onnx.export (torch.export-based, as edgekd.graph.export does it): the task's inputs
    positionally, named by its specs, every named axis dynamic up to the task's size for it."""
    sizes = task.axis_sizes()
    example_dims = {name: min(size, EXAMPLE_LENGTH) for name, size in sizes.items()}
    feeds = task.feed(task.dummy_inputs(EXAMPLE_BATCH, **example_dims))
    inputs = task.inputs()
    path.parent.mkdir(parents=True, exist_ok=True)
    export_torch(model.eval(), tuple(feeds.values()), path, opset, ([s.name for s in inputs], [s.name for s in task.outputs()]),
                 dynamic_shapes(inputs, sizes), f"{type(model).__name__} for task '{task.name}'")


WITH_PAST = "-with-past"


def optimum_task_of(task: Task, with_past: bool) -> str:
    """The optimum task `task` exports with: `text-generation-with-past` for a decoder with a KV cache."""
    if not with_past:
        return task.optimum_task
    if task.optimum_task != "text-generation":
        raise ConfigError(f"task '{task.name}' has no KV cache to export (optimum task '{task.optimum_task}')",
                          "past key/values are for causal-lm decoders")
    return task.optimum_task + WITH_PAST


def _past_contract(base: Any, spec_inputs: dict[str, dict[int, str]], spec_outputs: dict[str, dict[int, str]],
                   positions: bool = False) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]:
    """The task's inputs plus optimum's past key/values (and its attention-mask axis over past + new
    tokens); the task's logits plus optimum's present key/values. A prefill graph (no past inputs):
    the task's inputs, the logits and the present key/values."""
    outputs = {**spec_outputs, **{n: axes for n, axes in base.outputs.items() if n.startswith("present")}}
    if not base.use_past_in_inputs:
        return spec_inputs, outputs
    full = dict(base.inputs)
    inputs = {n: full.get(n, axes) if n == "attention_mask" else axes for n, axes in spec_inputs.items()}
    if positions and "position_ids" in full:  # a fixed-length cache with unfilled slots: positions are not its length
        inputs["position_ids"] = full["position_ids"]
    inputs.update({n: axes for n, axes in full.items() if n.startswith("past_key_values")})
    return inputs, outputs


def optimum_config(model: Any, task: Task, with_past: bool = False, past_inputs: bool = True, positions: bool = False) -> Any:
    """optimum-onnx's export config for `model` at the task's optimum task, narrowed to the task's
    specs: its dummy inputs and the ONNX inputs are exactly the task's, with the task's axes (with
    `with_past`: plus past key/values in, present key/values out; `past_inputs=False`: a prefill
    graph, present key/values out only; `positions`: position_ids in as well, for a static decode graph)."""
    try:
        import optimum.exporters.onnx.model_configs  # noqa: F401  registers the model types
        from optimum.exporters.tasks import TasksManager
    except ImportError as exc:
        raise ToolchainMissing("exporting a Hugging Face model needs optimum-onnx",
                               "pip install optimum-onnx") from exc
    name = optimum_task_of(task, with_past)
    try:
        constructor = TasksManager.get_exporter_config_constructor(
            "onnx", model=model, task=name, library_name="transformers")
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"optimum-onnx cannot export {type(model).__name__} for {name}: {exc}",
                          "export the model yourself and compile the ONNX file") from None
    options = {"task": task.optimum_task, **({"use_past": True, "use_past_in_inputs": past_inputs} if with_past else {})}
    made = constructor(model.config, **options)
    base = made.__class__
    spec_inputs = {s.name: s.axes for s in task.inputs()}
    spec_outputs = {s.name: s.axes for s in task.outputs()}
    if with_past:
        spec_inputs, spec_outputs = _past_contract(made, spec_inputs, spec_outputs, positions)

    class TaskContract(base):  # type: ignore[misc,valid-type]
        @property
        def inputs(self) -> dict[str, dict[int, str]]:
            return spec_inputs

        @property
        def outputs(self) -> dict[str, dict[int, str]]:
            return spec_outputs

    return TaskContract(model.config, **options)


def export_hf(model: Any, task: Task, path: Path, opset: int, with_past: bool = False, past_inputs: bool = True,
              positions: bool = False) -> None:
    """optimum-onnx's `onnx_export_from_model` at the task's optimum task (decoders: without past
    key/values, or with them: `with_past`, edgekd.graph.decoder), with the task's input and output
    specs and optimum's own validation (ONNX Runtime
    outputs against the torch model's on its dummy inputs, at its tolerance for the model type: a
    mismatch fails the export); `model.onnx` (and external weights, if any) moved to `path`. The
    build's parity budget is checked after this, on the evaluation data."""
    from optimum.exporters.onnx import onnx_export_from_model

    config = optimum_config(model, task, with_past, past_inputs, positions)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp, quiet() as log:
        try:
            onnx_export_from_model(model.eval(), tmp, opset=opset, task=optimum_task_of(task, with_past), do_validation=True,
                                   custom_onnx_configs={"model": config})
        except Exception as exc:  # the exporter raises many types; all mean "this model did not export"
            raise failed(f"optimum-onnx export of {type(model).__name__} for task '{task.name}'", exc, log) from exc
        data = Path(tmp) / EXTERNAL_DATA_FILE
        if data.exists():  # the graph names this file; it has to sit beside the model under its own name
            shutil.move(str(data), str(path.parent / EXTERNAL_DATA_FILE))
        os.replace(Path(tmp) / ONNX_FILE, path)
