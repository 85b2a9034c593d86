"""Roofline latency estimate of an ONNX model on a device that is not attached.

Per executed node, on the unit it is placed on (accelerator or fallback):

    time = max(2 * macs / (peak[precision] * efficiency[op_class]),
               bytes_moved / (bandwidth * bandwidth_efficiency)) + layer_overhead

bytes_moved = (input + output + weight elements) x the element size of `precision` (int8 1, fp16 2,
fp32 4). Ops without MACs (pooling, normalization, elementwise, data movement) are therefore
memory-bound. The latency is the sum over nodes (one node at a time, as batch-1 inference on these
runtimes runs) plus the device's invoke_overhead_us, plus switch_overhead_us for every change
between accelerator and fallback along the graph's node order (ONNX keeps nodes in topological
order; a graph with parallel branches is walked in that one order).

Nodes that cost nothing, because the runtimes fold them into their neighbours:
- QuantizeLinear/DequantizeLinear inside the graph (they become the integer kernels' input and
  output types) and DequantizeLinear of weights (weights are stored quantized). A Q/DQ at the graph
  boundary (reading a graph input or writing a graph output) is a real conversion pass: it is priced
  as a memory-bound node at its own types (e.g. fp32 in, int8 out).
- Constant nodes (folded at build time).
- With `fuse_activations`, an activation or BatchNormalization whose only input comes from a
  conv/gemm that feeds nothing else, on the same unit (TensorRT, ORT's FusedConv and QNN all do).

Every figure comes from the DeviceModel (the target file) or the host; `assumptions` lists them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.analysis.device import ELEMENT_BYTES, DeviceModel, HostCpu, Resolved, resolve, resolve_fallback
from edgekd.analysis.graph import NodeCost, node_costs

if TYPE_CHECKING:
    import onnx

FUSABLE = frozenset({"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "BatchNormalization"})
PLACEMENTS = ("accelerator", "fallback")


@dataclass(frozen=True)
class Estimate:
    latency_ms: float
    precision: str
    batch: int
    per_op_type: dict[str, dict]  # op_type -> {"ms", "nodes", "macs", "bound"}
    per_node: list[dict]  # name, op_type, op_class, placement, ms, compute_ms, memory_ms, overhead_ms, switch_ms, bound
    assumptions: list[str]
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"method": "estimated", "model": "roofline per node (edgekd.analysis.estimate)", **asdict(self)}


def _fused(costs: list[NodeCost], placement: dict[str, str], fuse_activations: bool) -> dict[str, str]:
    """name -> why the node costs nothing, for the nodes the runtimes fold away."""
    produced = {out: c for c in costs for out in c.outputs}
    consumed: dict[str, int] = {}
    for c in costs:
        for name in c.inputs:
            consumed[name] = consumed.get(name, 0) + 1
    fused: dict[str, str] = {}
    anchored: set[str] = set()  # conv/gemm nodes and the nodes already fused into them
    for c in costs:
        if c.op_type == "Constant":
            fused[c.name] = "constant, folded at build time"
        elif c.op_class == "quant":
            boundary = any(i not in produced for i in c.inputs) or any(o not in consumed for o in c.outputs)
            if not c.inputs:
                fused[c.name] = "weight dequantize: weights are stored quantized"
            elif not boundary:
                fused[c.name] = "Q/DQ inside the graph: folded into the integer kernels"
        elif c.op_class in ("conv", "gemm"):
            anchored.add(c.name)
        elif fuse_activations and c.op_type in FUSABLE and len(c.inputs) == 1:
            src = produced.get(c.inputs[0])
            if (src is not None and src.name in anchored and all(consumed.get(o, 0) == 1 for o in src.outputs)
                    and placement.get(src.name, "accelerator") == placement.get(c.name, "accelerator")):
                fused[c.name] = f"fused into {src.name}"
                anchored.add(c.name)
    return fused


def _check_placement(costs: list[NodeCost], placement: dict[str, str], device: DeviceModel, precision: str) -> None:
    names = {c.name for c in costs}
    unknown = sorted(set(placement) - names)
    if unknown:
        raise ValueError(f"placement names nodes the model does not have: {unknown[:5]}")
    bad = {k: v for k, v in placement.items() if v not in PLACEMENTS}
    if bad:
        raise ValueError(f"placement values must be one of {PLACEMENTS}; got {dict(list(bad.items())[:5])}")
    if "fallback" in placement.values():
        if device.fallback is None:
            raise ValueError(f"nodes are placed on 'fallback' but device '{device.name}' has no [device.fallback]")
        if precision not in device.fallback.peak_tops:
            raise ValueError(f"fallback '{device.fallback.name}' has no peak for '{precision}' "
                             f"(it has {sorted(device.fallback.peak_tops)})")


def _dominant(parts: dict[str, float]) -> str:
    return max(parts, key=lambda k: parts[k]) if any(parts.values()) else "fused"


def estimate(model: "onnx.ModelProto | Path", device: DeviceModel, precision: str = "int8", batch: int = 1,
             placement: dict[str, str] | None = None, host: HostCpu | None = None) -> Estimate:
    """Roofline estimate of `model` at `batch` on `device` (see the module docstring).
    `placement` maps node names to "accelerator" (the default) or "fallback"; `host` overrides what
    a host_relative device reads from this machine."""
    if precision not in ELEMENT_BYTES:
        raise ValueError(f"precision must be one of {sorted(ELEMENT_BYTES)}, got '{precision}'")
    if precision not in device.precisions:
        raise ValueError(f"device '{device.name}' has no peak for '{precision}' (it has {list(device.precisions)})")
    placement = dict(placement or {})
    costs = node_costs(model, batch)
    _check_placement(costs, placement, device, precision)
    units: dict[str, Resolved] = {"accelerator": resolve(device, host)}
    if device.fallback is not None and "fallback" in placement.values():
        units["fallback"] = resolve_fallback(device.fallback)
    fused = _fused(costs, placement, device.fuse_activations)
    elem = ELEMENT_BYTES[precision]

    per_node: list[dict] = []
    previous: str | None = None
    switches = 0
    for c in costs:
        where = placement.get(c.name, "accelerator")
        row: dict[str, Any] = {"name": c.name, "op_type": c.op_type, "op_class": c.op_class, "placement": where,
                               "macs": c.macs, "ms": 0.0, "compute_ms": 0.0, "memory_ms": 0.0, "overhead_ms": 0.0,
                               "switch_ms": 0.0, "bound": "fused"}
        if c.name in fused:
            row["note"] = fused[c.name]
            per_node.append(row)
            continue
        unit = units[where]
        if c.op_class == "quant":  # a boundary conversion pass, at its own types
            bytes_moved = c.input_bytes + c.output_bytes
        else:
            bytes_moved = (c.input_elems + c.output_elems + c.weight_elems) * elem
        compute_s = 2 * c.macs / (unit.peak_tops[precision] * 1e12 * unit.efficiency(c.op_class))
        memory_s = bytes_moved / (unit.memory_bandwidth_gbs * 1e9 * unit.bandwidth_efficiency)
        overhead_s = unit.layer_overhead_us * 1e-6
        switch_s = 0.0
        if previous is not None and where != previous:
            switch_s = units["fallback"].switch_overhead_us * 1e-6
            switches += 1
        previous = where
        row.update(compute_ms=compute_s * 1e3, memory_ms=memory_s * 1e3, overhead_ms=overhead_s * 1e3,
                   switch_ms=switch_s * 1e3, ms=(max(compute_s, memory_s) + overhead_s + switch_s) * 1e3,
                   bytes_moved=bytes_moved,
                   bound=_dominant({"compute": compute_s if compute_s >= memory_s else 0.0,
                                    "memory": memory_s if memory_s > compute_s else 0.0, "overhead": overhead_s}))
        per_node.append(row)

    per_op_type: dict[str, dict] = {}
    parts: dict[str, dict[str, float]] = {}
    for row in per_node:
        agg = per_op_type.setdefault(row["op_type"], {"ms": 0.0, "nodes": 0, "macs": 0, "bound": "fused"})
        agg["ms"] += row["ms"]
        agg["nodes"] += 1
        agg["macs"] += row["macs"]
        share = parts.setdefault(row["op_type"], {"compute": 0.0, "memory": 0.0, "overhead": 0.0})
        if row["bound"] != "fused":
            roof = max(row["compute_ms"], row["memory_ms"])
            share["compute" if row["compute_ms"] >= row["memory_ms"] else "memory"] += roof
            share["overhead"] += row["overhead_ms"]
    for op_type, agg in per_op_type.items():
        agg["bound"] = _dominant(parts[op_type])

    invoke_ms = device.invoke_overhead_us * 1e-3
    latency_ms = invoke_ms + sum(r["ms"] for r in per_node)
    executed = sum(r["bound"] != "fused" for r in per_node)
    assumptions = [
        f"batch {batch}, precision {precision}: bytes moved at {elem} byte(s)/element",
        f"{executed} of {len(per_node)} nodes executed; {len(per_node) - executed} folded away (interior Q/DQ, "
        "weight dequantize, constants" + (", activations/BatchNorm fused into conv/gemm)" if device.fuse_activations else ")"),
        f"[device] invoke_overhead_us = {device.invoke_overhead_us:g} per inference",
    ]
    for where, unit in units.items():
        assumptions.append(f"{where} = {unit.name}")
        assumptions += unit.assumptions
    if switches:
        assumptions.append(f"{switches} accelerator<->fallback transitions along the node order")
    return Estimate(latency_ms=latency_ms, precision=precision, batch=batch, per_op_type=per_op_type,
                    per_node=per_node, assumptions=assumptions, device=device.name)
