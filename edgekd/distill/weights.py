"""Student/teacher weights as safetensors (no pickle anywhere), and their size in params and MACs."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.common.safetensors_header import check_safetensors
from edgekd.errors import ConfigError
from edgekd.pipeline.results import Metric


def load_weights(model: Any, path: Path, what: str) -> Any:
    """`model` with the weights of the safetensors file `path` (header size-checked first), in eval
    mode; ConfigError naming the file when they cannot be loaded into it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    hint = f"give safetensors weights saved from the {what} factory's model"
    check_safetensors(path, f"{what} weights", hint)
    try:
        load_model(model, str(path), strict=True)  # tied weights (saved once) are filled back in
    except (RuntimeError, OSError, SafetensorError) as exc:  # wrong keys/shapes, unreadable or not safetensors
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: cannot load the {what} weights ({first})", hint) from None
    return model.eval()


def save_weights(model: Any, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The module's state dict as safetensors, with `metadata` in the header (provenance: edgekd.graph.provenance).
    Tensors shared by several names (tied input/output embeddings) are saved once (safetensors' save_model)."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata=metadata, force_contiguous=True)


def read_metadata(path: Path) -> dict[str, str]:
    """The header metadata of a safetensors file; {} when it has none or is not readable as safetensors
    (loading its weights reports that properly)."""
    from safetensors import SafetensorError, safe_open

    try:
        check_safetensors(path)
        with safe_open(str(path), framework="np") as fh:
            return dict(fh.metadata() or {})
    except (OSError, SafetensorError, ValueError, ConfigError):
        return {}


def size_metrics(model: Any, task: Any, role: str) -> dict[str, Metric]:
    """`<role>.params` and `<role>.macs` of a torch module, its MACs on the task's batch-1 dummy inputs
    (edgekd.tasks.base.Task.dummy_inputs: the task's default dims)."""
    from edgekd.distill.trainer import count_params, count_task_macs

    how = "torch.utils.flop_counter FLOPs / 2 at batch 1 (convolutions and matrix products)"
    macs = count_task_macs(model, lambda m: task.forward(m, task.dummy_inputs(1)))
    return {f"{role}.params": Metric(count_params(model), "", "measured", "parameters of the torch module"),
            f"{role}.macs": Metric(macs, "", "measured", how)}
