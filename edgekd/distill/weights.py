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
    from safetensors.torch import load_file

    hint = f"give safetensors weights saved from the {what} factory's model"
    check_safetensors(path, f"{what} weights", hint)
    try:
        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
        missing = [name for name in missing if name not in tied_names(model)]  # tied weights are saved once
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}")
    except (RuntimeError, OSError, SafetensorError) as exc:  # wrong keys/shapes, unreadable or not safetensors
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: cannot load the {what} weights ({first})", hint) from None
    return model.eval()


def _storage_key(tensor: Any) -> tuple[Any, ...]:
    return tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride())


def tied_names(model: Any) -> set[str]:
    """State-dict names whose tensor is the same as an earlier name's (tied input/output embeddings)."""
    seen: set[tuple[Any, ...]] = set()
    tied = set()
    for name, tensor in model.state_dict().items():
        key = _storage_key(tensor)
        if key in seen:
            tied.add(name)
        seen.add(key)
    return tied


def save_weights(model: Any, path: Path, metadata: dict[str, str] | None = None) -> None:
    """The module's state dict as safetensors, with `metadata` in the header (provenance: edgekd.graph.provenance).
    A tensor shared by several names (tied input/output embeddings) is saved once, under its first
    name; the header holds `metadata` only, so equal weights give equal bytes."""
    from safetensors.torch import save_file

    tied = tied_names(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k not in tied}, str(path), metadata=metadata)


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
