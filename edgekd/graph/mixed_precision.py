"""Partial static INT8 quantization for accuracy-aware mixed precision: one quant_pre_process and one
calibration of the fp32 graph, then any number of Q/DQ graphs that quantize only some ops or keep
some ops in float, all with the target's recipe (edgekd.graph.quantize.static_options) and the
same tensor ranges (onnxruntime.quantization's calibration cache: the ranges are computed once, by
the first, full quantization, and read back by every later one)."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekd.common.toolchain import require
from edgekd.config.models import QuantizeConfig
from edgekd.config.target import TargetQuantize
from edgekd.graph.quantize import (
    Calibration,
    calibration_reader,
    prepare,
    quiet_quantizer_logs,
    static_options,
)

CALIBRATION_CACHE = "calibration_ranges.json"


@dataclass(frozen=True)
class QuantOp:
    """One op (node) the recipe quantizes, or a group of consecutive ones (large graphs)."""

    name: str  # the node's name, or "first .. last (n ops)" for a group
    op_type: str  # the node's op type, or "group"
    nodes: tuple[str, ...]  # the node names it stands for


@dataclass(frozen=True)
class PartialSettings:
    """What every partial quantization shares: the calibration rows, the quantize config (calibration
    method), the target's recipe, the attention-mask inputs whose path stays float."""

    calib: Calibration
    config: QuantizeConfig
    recipe: TargetQuantize
    mask_inputs: tuple[str, ...] = ()


class PartialQuantizer:
    """Prepares `fp32_model` once in `work` and calibrates it once (the full INT8 graph,
    `full_model`); then `quantize()` writes graphs with some ops kept in float."""

    def __init__(self, fp32_model: Path, work: Path, settings: PartialSettings) -> None:
        require("onnxruntime", "INT8 quantization")
        self.work, self.settings = work, settings
        self.prepared = work / "mixed.pre.onnx"
        self.cache = work / CALIBRATION_CACHE
        with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():
            self.always_float = tuple(prepare(fp32_model, self.prepared, settings.mask_inputs))
        _name_every_node(self.prepared)
        self.full_model = self.quantize(work / "mixed_full.onnx")  # computes and caches the ranges

    def quantizable(self) -> list[QuantOp]:
        """The nodes of the prepared graph, in graph order, whose op type quantize_static quantizes by
        default (its QDQ and QLinear registries), less the attention-mask path."""
        import onnx
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        types = set(QDQRegistry) | set(QLinearOpsRegistry)
        graph = onnx.load(str(self.prepared), load_external_data=False).graph
        return [QuantOp(n.name, n.op_type, (n.name,)) for n in graph.node
                if n.op_type in types and n.name not in self.always_float]

    def quantize(self, out: Path, keep_float: Sequence[str] = (), only: Sequence[str] = ()) -> Path:
        """A Q/DQ graph at `out` with the nodes `keep_float` (and the mask path) in float; `only`:
        quantize just these nodes. The calibration ranges come from the cache after the first call."""
        from onnxruntime.quantization import QuantFormat, quantize_static

        s = self.settings
        exclude = [*self.always_float, *keep_float]
        with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():
            quantize_static(str(self.prepared), str(out), calibration_reader(s.calib), quant_format=QuantFormat.QDQ,
                            nodes_to_quantize=list(only) or None, nodes_to_exclude=exclude or None,
                            calibration_cache_path=str(self.cache), **static_options(s.config, s.recipe))
        return out


def _name_every_node(model_path: Path) -> None:
    """Unique names for every node of the prepared graph (edgekd.graph.transformer.name_nodes): the
    partial quantizations address nodes by name."""
    import onnx

    from edgekd.graph.transformer import name_nodes

    model = onnx.load(str(model_path))
    before = [n.name for n in model.graph.node]
    name_nodes(model)
    if [n.name for n in model.graph.node] != before:
        onnx.save(model, str(model_path))


def grouped(ops: list[QuantOp], limit: int) -> list[QuantOp]:
    """`ops` as they are when there are at most `limit`; else `limit` groups of consecutive ops (graph
    order: a group is a stretch of the network, e.g. a block), as even in size as they divide."""
    if len(ops) <= limit:
        return ops
    size, extra = divmod(len(ops), limit)
    groups, start = [], 0
    for i in range(limit):
        part = ops[start:start + size + (1 if i < extra else 0)]
        start += len(part)
        groups.append(QuantOp(f"{part[0].name} .. {part[-1].name} ({len(part)} ops)", "group",
                              tuple(n for op in part for n in op.nodes)))
    return groups
