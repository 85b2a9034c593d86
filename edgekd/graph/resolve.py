"""Give every dim of every model input a value, and say where it came from, in this order:

1. `--shape NAME=1x128` (as trtexec takes them); a dim the model fixes must agree;
2. the model itself (fixed dims);
3. the batch (axis 0 when it is dynamic): 1, or the batch asked for;
4. optimum-onnx's export config when the model's config.json sits beside it (edgekd.graph.hf_config);
5. task-aware defaults: images 3x224x224 or what the graph's first convolution demands (channels;
   the image side of a ViT-style patch embedding); sequence length 128 (at most the model's
   position-embedding rows); decoder past length 0 (for targets that need static, non-empty shapes:
   one decode step, 1 new token after 127 past ones);
6. a dim named by an expression of other dims (optimum's 'past_sequence_length + sequence_length')
   is computed from them.

A dim that still has no value is a ShapeError (exit 2) naming the input and the dim. The same
dim name gets the same value in every input that uses it.
"""
from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from edgekd.graph.hf_config import CONFIG_FILE, ExportConfig, export_config
from edgekd.graph.inputs import (
    GraphHints,
    InputSpec,
    ModelInputs,
    ResolvedInput,
    ShapeError,
    graph_inputs,
)

if TYPE_CHECKING:
    import onnx

DEFAULT_SEQUENCE = 128
DEFAULT_IMAGE_SIDE = 224
DEFAULT_CHANNELS = 3
DEFAULT_PAST = 0
# targets that need static, non-empty shapes (the QNN HTP) take a decoder with past key/values at one
# decode step instead of an empty past
DECODE_STEP_NOTE = "default for a static-shape target: one decode step (1 new token after {past} past tokens)"
# inputs whose axis 1 is a token sequence when nothing else names it (a float input's axis 1 may be
# anything: features, frames, channels; it needs --shape or a config)
_SEQUENCE_ROLES = ("token_ids", "attention_mask", "token_type_ids", "position_ids", "int", "bool")
_OPS: dict[type, Callable[[int, int], int]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                                               ast.FloorDiv: operator.floordiv}


def _is_expression(dim: str) -> bool:
    try:
        return isinstance(ast.parse(dim, mode="eval").body, ast.BinOp)
    except SyntaxError:
        return False


def _evaluate(expression: str, named: dict[str, tuple[int, str]]) -> int | None:
    """The value of a dim expression like 'past_sequence_length + sequence_length' from named
    dims, None when it is not an arithmetic expression of known names."""
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        return None

    def value(node: ast.AST) -> int | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name):
            return named[node.id][0] if node.id in named else None
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = value(node.left), value(node.right)
            return None if left is None or right is None else _OPS[type(node.op)](left, right)
        return None

    return value(tree) if isinstance(tree, (ast.BinOp, ast.Name, ast.Constant)) else None


class _Resolver:
    def __init__(self, model: "onnx.ModelProto", config: ExportConfig | None, batch: int, decode_step: bool) -> None:
        self.hints = GraphHints(model)
        self.config = config
        self.batch = batch
        self.named: dict[str, tuple[int, str]] = {}
        positions = self.hints.max_positions() or (config.figures.get("max_positions") if config else None)
        context = min(DEFAULT_SEQUENCE, positions) if positions else DEFAULT_SEQUENCE
        self.sequence, self.past = (1, context - 1) if decode_step else (context, DEFAULT_PAST)
        self.sequence_note = (DECODE_STEP_NOTE.format(past=self.past) if decode_step else f"default: sequence length {self.sequence}") + (
            f" (the model has {positions} positions)" if positions and positions < DEFAULT_SEQUENCE else "")
        self.past_note = DECODE_STEP_NOTE.format(past=self.past) if decode_step else f"default: decoder past length {DEFAULT_PAST}"

    def default(self, spec: InputSpec, axis: int, label: str | None) -> tuple[int, str] | None:
        """Steps 3-5 for one symbolic axis."""
        if axis == 0:
            return self.batch, f"batch {self.batch}"
        if self.config is not None and label in self.config.dims and label not in ("past_sequence_length", "sequence_length"):
            return self.config.dims[label], self.config.describe()
        if spec.role == "past_key_values":
            if label and "past" in label.lower() or (label is None and axis == len(spec.dims) - 2):
                return self.past, self.past_note
            return None
        if spec.role == "image":
            channels, side = self.hints.image_dims(spec.name)
            if axis == 1:
                return (channels, "the first convolution's weight") if channels else (DEFAULT_CHANNELS, "default: 3 channels")
            if side:
                return side, "the patch embedding and the position-embedding table"
            return DEFAULT_IMAGE_SIDE, f"default: image side {DEFAULT_IMAGE_SIDE}"
        if spec.role in _SEQUENCE_ROLES and axis == 1:
            return self.sequence, self.sequence_note
        return None

    def axis(self, spec: InputSpec, axis: int, override: tuple[int, ...] | None) -> tuple[int, str] | None:
        dim = spec.dims[axis]
        if override is not None:
            if isinstance(dim, int) and dim != override[axis]:
                raise ShapeError(f"--shape {spec.name}={'x'.join(map(str, override))}: axis {axis} is {override[axis]}, "
                                 f"but the model fixes it to {dim}", f"give {dim} for that axis")
            return override[axis], "--shape"
        if isinstance(dim, int):
            return dim, "model"
        if dim is not None and dim in self.named:
            return self.named[dim]
        if dim is not None and _is_expression(dim):
            return None  # computed in the second pass, once the names it uses have values
        found = self.default(spec, axis, dim)
        if found is not None and dim is not None:
            self.named[dim] = found
        return found


def resolve_inputs(model: "onnx.ModelProto", model_path: Path | None = None,
                   overrides: dict[str, tuple[int, ...]] | None = None, batch: int = 1, static: bool = False) -> ModelInputs:
    """Every graph input of `model` with a concrete shape (see the module docstring). `model_path`
    locates a config.json beside the model; `overrides` are --shape values; `static`: the target
    needs static, non-empty shapes, so a decoder with past key/values defaults to one decode step."""
    specs = graph_inputs(model)
    overrides = dict(overrides or {})
    names = [s.name for s in specs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ShapeError(f"--shape names {', '.join(repr(u) for u in unknown)}, which the model does not have "
                         f"(its inputs: {', '.join(names) or 'none'})", "use the model's input names")
    config = export_config(model_path, names, DEFAULT_SEQUENCE) if model_path is not None else None
    resolver = _Resolver(model, config, batch, static and any(s.role == "past_key_values" for s in specs))
    for spec in specs:  # named dims from --shape first, so every input sharing a name agrees
        if spec.name in overrides:
            shape = overrides[spec.name]
            if spec.dims and len(shape) != len(spec.dims):
                raise ShapeError(f"--shape {spec.name}={'x'.join(map(str, shape))} has rank {len(shape)}, but input "
                                 f"'{spec.name}' has rank {len(spec.dims)} ({_shown(spec)})", "give one value per axis")
            for dim, size in zip(spec.dims, shape):
                if isinstance(dim, str):
                    resolver.named.setdefault(dim, (size, "--shape"))
    values: dict[str, list[tuple[int, str] | None]] = {}
    for spec in specs:
        if not spec.dims and spec.name not in overrides:
            raise ShapeError(f"input '{spec.name}' has no declared shape", f"give it with --shape {spec.name}=DIMS")
        override = overrides.get(spec.name)
        rank = len(override) if override is not None and not spec.dims else len(spec.dims)
        if not spec.dims:
            spec = InputSpec(spec.name, spec.dtype, tuple([None] * rank), spec.role)
        values[spec.name] = [resolver.axis(spec, axis, override) for axis in range(rank)]
    resolved = []
    for spec in specs:
        row = values[spec.name]
        for axis, found in enumerate(row):
            dim = spec.dims[axis] if axis < len(spec.dims) else None
            if found is None and isinstance(dim, str):
                computed = _evaluate(dim, resolver.named)
                if computed is not None:
                    row[axis] = found = (computed, f"'{dim}' from the other inputs")
            if found is None:
                label = f"'{dim}'" if dim else "unnamed"
                raise ShapeError(f"input '{spec.name}' ({_shown(spec)}): axis {axis} ({label}) has no value",
                                 f"give it with --shape {spec.name}={'x'.join(str(v[0]) if v else 'N' for v in row)}")
        batch_axis = 0 if spec.dims and not isinstance(spec.dims[0], int) else None
        vocab = resolver.hints.vocab_size(spec.name) or (config.figures.get("vocab_size") if config and spec.role == "token_ids" else None)
        resolved.append(ResolvedInput(spec.name, spec.dtype, tuple(v[0] for v in row if v), spec.role,
                                      tuple(v[1] for v in row if v), batch_axis, vocab if spec.role == "token_ids" else None))
    notes: tuple[str, ...] = (f"shapes: {config.describe()} for named axes",) if config else ()
    if config is None and model_path is not None and (Path(model_path).parent / CONFIG_FILE).is_file():
        notes += (f"{Path(model_path).parent / CONFIG_FILE} was not used: it is not a transformers config optimum-onnx "
                  "exports, or optimum-onnx is not installed (pip install 'edgekd[hf]')",)
    return ModelInputs(tuple(resolved), notes)


def _shown(spec: InputSpec) -> str:
    return "x".join(str(d) if d is not None else "?" for d in spec.dims) or "no shape"


def load_inputs(model_path: Path, overrides: dict[str, tuple[int, ...]] | None = None, batch: int = 1,
                static: bool = False) -> ModelInputs:
    """resolve_inputs for the ONNX file at `model_path` (weights in external files are not read)."""
    import onnx

    return resolve_inputs(onnx.load(str(model_path), load_external_data=False), Path(model_path), overrides, batch, static)
