"""A model's graph inputs: names, element types and dims as the ONNX file declares them, what each
input is for (token ids, an attention mask, past key/values, an image, ...), and the facts the
graph itself gives about them (vocabulary size from the embedding, channels and image size from
the first convolution, the longest sequence from the position embedding).

Resolved inputs (every dim a number, with where each number came from) are what every
model-level command uses: check, estimate, bench, compile, tuning and the device-side runner.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError

if TYPE_CHECKING:
    import onnx

ROLES = ("token_ids", "attention_mask", "token_type_ids", "position_ids", "past_key_values", "image", "float",
         "bool", "int")
_PASS_THROUGH = {"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity"}


class ShapeError(ConfigError):
    """A model input whose shape edgekd cannot determine, or a --shape that does not fit the model."""


@dataclass(frozen=True)
class InputSpec:
    """One graph input as declared: `dims` holds an int (fixed), the dim_param name, or None."""

    name: str
    dtype: str  # numpy dtype name: float32, int64, bool, ...
    dims: tuple[int | str | None, ...]
    role: str


@dataclass(frozen=True)
class ResolvedInput:
    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str
    sources: tuple[str, ...]  # per axis, where its value came from
    batch_axis: int | None = None  # the dynamic batch axis (None: the batch is fixed by the model)
    vocab_size: int | None = None  # token ids: values are drawn below this

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape), "sources": list(self.sources)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ResolvedInput":
        return cls(**{**data, "shape": tuple(data["shape"]), "sources": tuple(data["sources"])})


@dataclass(frozen=True)
class ModelInputs:
    """Every graph input with a concrete shape; `notes` say where shapes came from overall."""

    inputs: tuple[ResolvedInput, ...]
    notes: tuple[str, ...] = ()

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {i.name: i.shape for i in self.inputs}

    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def describe(self) -> str:
        """e.g. "input_ids int64 1x128, attention_mask int64 1x128"."""
        return ", ".join(f"{i.name} {i.dtype} {'x'.join(map(str, i.shape))}" for i in self.inputs)

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [i.to_json() for i in self.inputs], "notes": list(self.notes)}

    def key(self) -> list[dict[str, Any]]:
        """What the inputs are, for cache keys: not where their dims came from (paths, wording)."""
        return [{k: v for k, v in i.to_json().items() if k != "sources"} for i in self.inputs]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelInputs":
        return cls(tuple(ResolvedInput.from_json(i) for i in data["inputs"]), tuple(data.get("notes", ())))


def _np_dtype(elem_type: int) -> str:
    import numpy as np
    import onnx

    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def role_of(name: str, dtype: str, rank: int, embeds: bool) -> str:
    """What an input is for, from its name, type and rank (`embeds`: it indexes an embedding table)."""
    low = name.lower()
    if "past" in low or low.startswith("cache") or ".key" in low or ".value" in low:
        return "past_key_values"
    if dtype == "bool":
        return "bool"
    if dtype.startswith(("int", "uint")):
        if "mask" in low:
            return "attention_mask"
        if "token_type" in low or "segment" in low:
            return "token_type_ids"
        if "position" in low:
            return "position_ids"
        if embeds or "ids" in low or "token" in low:
            return "token_ids"
        return "int"
    if "mask" in low:
        return "attention_mask"
    return "image" if rank == 4 else "float"


def graph_inputs(model: "onnx.ModelProto") -> list[InputSpec]:
    """The model's real inputs (initializers that are also listed as inputs are left out)."""
    initializers = {t.name for t in model.graph.initializer}
    hints = GraphHints(model)
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tt = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise ShapeError(f"input '{value.name}' is not a tensor (a sequence or map input)",
                             "edgekd takes models whose inputs are tensors")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                     for d in tt.shape.dim) if tt.HasField("shape") else ()
        dtype = _np_dtype(tt.elem_type)
        specs.append(InputSpec(value.name, dtype, dims, role_of(value.name, dtype, len(dims), hints.vocab_size(value.name) is not None)))
    return specs


def all_nodes(graph: Any) -> list[Any]:
    """The nodes of `graph` and of the subgraphs its nodes hold (If branches, Loop bodies)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else list(attr.graphs)):
                nodes.extend(all_nodes(sub))
    return nodes


class GraphHints:
    """Facts about the inputs that the graph's own initializers give."""

    def __init__(self, model: "onnx.ModelProto") -> None:
        self.graph = model.graph
        self.initializers = {t.name: tuple(t.dims) for t in model.graph.initializer}
        for node in model.graph.node:  # Constant nodes are weights too
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.initializers[node.output[0]] = tuple(node.attribute[0].t.dims)
        self.consumers: dict[str, list[Any]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.producers = {out: node for node in model.graph.node for out in node.output}

    def _weight_dims(self, name: str) -> tuple[int, ...] | None:
        """Dims of an initializer, also behind a (weight) DequantizeLinear."""
        if name in self.initializers:
            return self.initializers[name]
        src = self.producers.get(name)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in self.initializers:
            return self.initializers[src.input[0]]
        return None

    def _reached(self, name: str, depth: int = 4) -> list[tuple[Any, int]]:
        """(node, input slot) pairs that read `name`, through casts and reshapes."""
        found: list[tuple[Any, int]] = []
        frontier = [name]
        for _ in range(depth):
            nxt = []
            for tensor in frontier:
                for node in self.consumers.get(tensor, []):
                    found += [(node, slot) for slot, n in enumerate(node.input) if n == tensor]
                    if node.op_type in _PASS_THROUGH:
                        nxt += list(node.output)
            frontier = nxt
        return found

    def vocab_size(self, name: str) -> int | None:
        """Rows of the embedding table the input indexes (a Gather on axis 0 of a weight), if any."""
        sizes = [dims[0] for node, slot in self._reached(name) if node.op_type == "Gather" and slot == 1
                 for dims in [self._weight_dims(node.input[0])] if dims]
        return min(sizes) if sizes else None

    def image_dims(self, name: str) -> tuple[int | None, int | None]:
        """(channels, side) the first convolution reading the input demands: channels from its weight
        (C_in/group x group); the side only for a patch embedding (kernel = stride) followed by a
        learned position embedding of n (+1) x C_out with n a square number (ViT, DeiT)."""
        for node, slot in self._reached(name):
            if node.op_type not in ("Conv", "ConvInteger") or slot != 0:
                continue
            weight = self._weight_dims(node.input[1])
            if not weight or len(weight) != 4:
                continue
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), list(weight[2:]))
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1, 1])
            side = None
            if kernel == strides and kernel[0] == kernel[1] and kernel[0] > 1:
                grids = [math.isqrt(n) for dims in self.initializers.values()
                         if len(dims) == 3 and dims[0] == 1 and dims[2] == weight[0]
                         for n in (dims[1] - 1, dims[1]) if n >= 4 and math.isqrt(n) ** 2 == n]
                side = max(grids) * kernel[0] if grids else None
            return weight[1] * group, side
        return None, None

    def max_positions(self) -> int | None:
        """Rows of a learned position-embedding table (a Gather whose indices come from position
        ids or a Range), or of the rotary cos cache a GroupQueryAttention reads (edgekd.graph.gqa_fusion
        cuts it to the model's positions), if the graph has one."""
        for node in all_nodes(self.graph):  # a phase-split engine's attention is inside its If branches
            cache = node.input[7] if node.op_type == "GroupQueryAttention" and len(node.input) > 7 else ""
            if cache and len(self.initializers.get(cache, ())) == 2:
                return self.initializers[cache][0]
        for node in self.graph.node:
            if node.op_type != "Gather":
                continue
            dims = self._weight_dims(node.input[0])
            if not dims or len(dims) != 2:
                continue
            src = self.producers.get(node.input[1])
            from_positions = "position" in node.input[1].lower() or (src is not None and src.op_type in ("Range", "Slice", "Add"))
            if from_positions or "position" in node.input[0].lower():
                return dims[0]
        return None


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """`NAME=1x128` (as trtexec's --shapes) -> ("NAME", (1, 128)); "NAME=" (a scalar) is allowed."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise ShapeError(f"--shape '{text}' is not NAME=DIMS", "write it like trtexec: --shape input_ids=1x128")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        raise ShapeError(f"--shape '{text}': dims '{dims}' are not integers separated by 'x'",
                         "e.g. --shape pixel_values=1x3x224x224") from None
    if any(d < 0 for d in shape):
        raise ShapeError(f"--shape '{text}': dims must be >= 0", "e.g. --shape input_ids=1x128")
    return name, shape


def parse_shapes(values: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for text in values or ():
        name, shape = parse_shape(text)
        if name in shapes and shapes[name] != shape:
            raise ShapeError(f"--shape gives input '{name}' twice with different dims", "give each input once")
        shapes[name] = shape
    return shapes
