"""Dims from optimum-onnx's export config, for a model exported by optimum: its `config.json` sits
beside `model.onnx`, and optimum's OnnxConfig for that model type and task names every dynamic
axis (batch_size, sequence_length, num_channels, height, width, past_sequence_length) and makes
dummy inputs from the config's own figures (image_size, num_channels, ...).

Used for shapes only; the values edgekd feeds come from edgekd.graph.feeds (optimum's dummy
attention masks are random zeros and ones, not what a real request sends).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import quiet

CONFIG_FILE = "config.json"
# transformers head class suffix -> optimum task
_TASKS = (("ForImageClassification", "image-classification"), ("ForSequenceClassification", "text-classification"),
          ("ForTokenClassification", "token-classification"), ("ForQuestionAnswering", "question-answering"),
          ("ForMaskedLM", "fill-mask"), ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
          ("ForMultipleChoice", "multiple-choice"), ("ForSemanticSegmentation", "semantic-segmentation"))


@dataclass(frozen=True)
class ExportConfig:
    """What optimum's export config says about a model: its task and a value per named axis."""

    folder: Path
    model_type: str
    task: str
    dims: dict[str, int]  # axis name (optimum's) -> value at batch 1
    figures: dict[str, int]  # config figures edgekd reads: vocab_size, max_positions

    def describe(self) -> str:
        return f"optimum-onnx export config ({self.model_type}, task {self.task}) from {self.folder / CONFIG_FILE}"


def _task(config: Any, with_past: bool) -> str:
    arch = (getattr(config, "architectures", None) or [""])[0]
    task = next((t for suffix, t in _TASKS if arch.endswith(suffix)), "feature-extraction")
    return f"{task}-with-past" if with_past and task == "text-generation" else task


def _figures(config: Any) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, names in (("vocab_size", ("vocab_size",)), ("max_positions", ("max_position_embeddings", "n_positions"))):
        value = next((getattr(config, n) for n in names if isinstance(getattr(config, n, None), int)), None)
        if value:
            found[key] = value
    return found


# optimum's dummy generators fall back to their own sizes where a config has no figure (a ResNet
# config has no image_size: optimum would say 64x64); dims that follow these probes are its fallback
_PROBE_SIDES = (223, 227)


def _shapes(onnx_config: Any, length: int, side: int) -> dict[str, tuple[int, ...]]:
    """Input name -> shape of optimum's dummy inputs at batch 1 (past key/values flattened)."""
    dummies = onnx_config.generate_dummy_inputs(framework="np", batch_size=1, sequence_length=length, height=side, width=side)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, value in dummies.items():
        if isinstance(value, (list, tuple)):  # past_key_values: [(key, value), ...]
            shapes.update({k: tuple(v.shape) for k, v in onnx_config.flatten_output_collection_property(name, value).items()})
        else:
            shapes[name] = tuple(value.shape)
    return shapes


def _load(folder: Path) -> Any:
    """The transformers config in `folder`'s config.json; None where there is none, it is not one
    (another tool's config.json) or transformers is absent."""
    if not (folder / CONFIG_FILE).is_file():
        return None
    try:
        with quiet():
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (ImportError, OSError, ValueError, KeyError):
        return None


def declared_config(model_path: Path) -> Any:
    """The transformers config in the config.json beside the model, or None."""
    return _load(Path(model_path).parent)


def declared_positions(model_path: Path) -> int | None:
    """The positions the model's config.json beside it declares (max_position_embeddings or
    n_positions), or None."""
    config = _load(Path(model_path).parent)
    return None if config is None else _figures(config).get("max_positions")


def export_config(model_path: Path, input_names: list[str], sequence_length: int) -> ExportConfig | None:
    """optimum's export config for the model at `model_path` when a transformers config.json sits
    beside it and optimum-onnx knows the model type; None otherwise (or when optimum is absent).
    `dims` maps optimum's axis names to the values of its dummy inputs at batch 1 and
    `sequence_length` (capped at the model's max positions)."""
    folder = Path(model_path).parent
    config = _load(folder)
    if config is None:
        return None
    try:
        with quiet():
            import optimum.exporters.onnx.model_configs  # noqa: F401  registers optimum's ONNX export configs
            from optimum.exporters.tasks import TasksManager
    except ImportError:
        return None
    with_past = any(n.startswith("past_key_values") for n in input_names)
    task = _task(config, with_past)
    figures = _figures(config)
    length = min(sequence_length, figures.get("max_positions", sequence_length))
    try:
        with quiet():
            constructor = TasksManager.get_exporter_config_constructor(
                exporter="onnx", model_type=config.model_type, task=task, library_name="transformers")
            onnx_config = constructor(config, use_past_in_inputs=True) if with_past else constructor(config)
            probes = [_shapes(onnx_config, length, side) for side in _PROBE_SIDES]
            axes = dict(onnx_config.inputs)
    except (KeyError, ValueError, TypeError, AttributeError, NotImplementedError):
        return None  # a model type or task optimum does not export
    dims: dict[str, int] = {}
    for name, named_axes in axes.items():
        for axis, label in named_axes.items():
            values = {probe[name][axis] for probe in probes if name in probe and axis < len(probe[name])}
            if len(values) == 1 and "+" not in label:  # the same whatever optimum's fallback: the config's own figure
                dims.setdefault(label, values.pop())
    return ExportConfig(folder, config.model_type, task, dims, figures)
