"""Roofline latency estimate of an ONNX model on a device that is not attached.

Per executed kernel (one node, or several the runtime fuses: edgekd.analysis.fusion), on the unit
it is placed on (accelerator or fallback):

    time = max(2 * macs / (peak[precision] * efficiency[op_class]),
               bytes_moved / (bandwidth * bandwidth_efficiency)) + layer_overhead

bytes_moved = the tensors the kernel reads and writes for the rest of the graph plus its weights,
each at min(its bytes at the graph's types, its elements x the element size of `precision`) (int8
1, fp16 2, fp32 4): a float graph run at a lower precision moves fewer bytes, an int8 tensor of a
Q/DQ graph never more than 1 per element. Tensors inside a fused kernel never reach memory. Ops
without MACs (pooling, normalization, elementwise, data movement) are therefore memory-bound.

Where the device gives a cache tier (`cache_mb`, `dram_bandwidth_gbs` or its per-core form), the
weights of a model whose weights do not fit the cache are read at the DRAM bandwidth, every
inference (activations stay at the cache bandwidth).

The latency is the sum over kernels (one at a time, as batch-1 inference on these runtimes runs)
plus the device's invoke_overhead_us, plus switch_overhead_us for every change between accelerator
and fallback along the graph's node order (ONNX keeps nodes in topological order; a graph with
parallel branches is walked in that one order).

Nodes that cost nothing (constant-folded, metadata-only, interior Q/DQ) and the nodes fused into a
kernel say so in `per_node[...]["note"]`. The shapes come from edgekd.graph (resolved inputs, then
shape inference); a node whose shapes stay unknown is costed from what is known and listed in
`unknown_shapes`. Every figure comes from the DeviceModel (the target file) or the host;
`assumptions` lists them, with the input shapes and where they came from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.analysis.device import (
    ELEMENT_BYTES,
    DeviceModel,
    HostCpu,
    Resolved,
    resolve,
    resolve_fallback,
)
from edgekd.analysis.fusion import Fusions, Kernel, Plan, plan
from edgekd.analysis.graph import (
    GraphCosts,
    NodeCost,
    graph_costs,
    model_inputs,
    onnxruntime_graph,
)
from edgekd.graph.inputs import ModelInputs

if TYPE_CHECKING:
    import onnx

PLACEMENTS = ("accelerator", "fallback")


@dataclass(frozen=True)
class Estimate:
    latency_ms: float
    precision: str
    batch: int
    per_op_type: dict[str, dict]  # kernel label -> {"ms", "nodes", "macs", "bound"}
    per_node: list[dict]  # name, op_type, op_class, placement, ms, compute_ms, memory_ms, overhead_ms, switch_ms, bound, note
    assumptions: list[str]
    device: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)  # ModelInputs.to_json(): the shapes estimated for
    unknown_shapes: list[dict[str, Any]] = field(default_factory=list)  # nodes costed without some shapes
    fusions: dict[str, int] = field(default_factory=dict)  # fused kernel kind -> count

    def to_json(self) -> dict[str, Any]:
        return {"method": "estimated", "model": "roofline per kernel (edgekd.analysis.estimate)", **asdict(self)}


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


@dataclass(frozen=True)
class _Traffic:
    """Bytes a kernel moves at `precision`: activations (cache) and weights (cache or DRAM)."""

    activation_bytes: int
    weight_bytes: int


def _traffic(kernel: Kernel, costs: GraphCosts, elem: int) -> _Traffic:
    """Bytes at the graph's types, capped at `elem` bytes per element; a runtime's own graph
    (costs.qdq_fused false) says each tensor's type itself: no cap."""
    if kernel.kind == "node" and kernel.anchor.op_class in ("quant", "quant_axis"):  # a conversion pass, own types
        return _Traffic(kernel.anchor.input_bytes + kernel.anchor.output_bytes, kernel.anchor.weight_bytes)
    cap = elem if costs.qdq_fused else 1 << 30
    tensors = [*kernel.inputs, *kernel.outputs]
    acts = sum(min(costs.tensor_bytes.get(t, 0), costs.tensor_elems.get(t, 0) * cap) for t in tensors)
    weights = sum(min(m.weight_bytes, m.weight_elems * cap) for m in kernel.members)
    return _Traffic(acts, weights)


def _kernel_precision(kernel: Kernel, costs: GraphCosts, precision: str, unit: Resolved) -> str:
    """`precision`, or in a runtime's own graph what the kernel's inputs say: an int8 input runs
    the integer kernel, float inputs the float one (an INT8 model keeps float islands there)."""
    if costs.qdq_fused or kernel.anchor.macs == 0:
        return precision
    sizes = [costs.tensor_bytes[t] // costs.tensor_elems[t] for t in kernel.anchor.inputs if costs.tensor_elems.get(t)]
    found = {1: "int8", 2: "fp16"}.get(min(sizes), "fp32") if sizes else precision
    return found if found in unit.peak_tops else precision


def _kernel_row(kernel: Kernel, unit: Resolved, traffic: _Traffic, precision: str, dram: float | None) -> dict[str, Any]:
    """The roofline of one kernel on `unit`; `dram` is the weights' bandwidth (B/s) when they do not fit the cache."""
    macs = sum(m.macs for m in kernel.members)
    compute_s = 2 * macs / (unit.peak_tops[precision] * 1e12 * unit.efficiency(kernel.op_class))
    cache_bw = unit.memory_bandwidth_gbs * 1e9 * unit.stream(kernel.op_class)
    if dram is None:
        memory_s = (traffic.activation_bytes + traffic.weight_bytes) / cache_bw
    else:
        memory_s = traffic.activation_bytes / cache_bw + traffic.weight_bytes / dram
    overhead_s = unit.layer_overhead_us * 1e-6
    parts = {"compute": compute_s if compute_s >= memory_s else 0.0,
             "memory": memory_s if memory_s > compute_s else 0.0, "overhead": overhead_s}
    return {"macs": macs, "compute_ms": compute_s * 1e3, "memory_ms": memory_s * 1e3, "overhead_ms": overhead_s * 1e3,
            "ms": (max(compute_s, memory_s) + overhead_s) * 1e3, "bytes_moved": traffic.activation_bytes + traffic.weight_bytes,
            "bound": _dominant(parts)}


def _kernel_note(kernel: Kernel) -> str:
    if len(kernel.members) == 1:
        return ""
    ops = ", ".join(m.op_type for m in kernel.members)
    return f"{kernel.kind} kernel of {len(kernel.members)} nodes ({ops})"


def _rows(costs: GraphCosts, fused: Plan, units: dict[str, Resolved], placement: dict[str, str],
          precision: str, dram: dict[str, float | None]) -> tuple[list[dict[str, Any]], int]:
    """One row per node in graph order (kernels on their anchor's row); returns (rows, switches)."""
    elem = ELEMENT_BYTES[precision]
    by_anchor = {k.anchor.name: k for k in fused.kernels}
    rows: list[dict[str, Any]] = []
    previous, switches = None, 0
    for c in costs.nodes:
        where = placement.get(c.name, "accelerator")
        row: dict[str, Any] = {"name": c.name, "op_type": c.op_type, "op_class": c.op_class, "placement": where}
        kernel = by_anchor.get(c.name)
        if kernel is None:
            note = fused.free.get(c.name) or f"fused into {fused.fused_into.get(c.name, '?')}"
            row.update(macs=0, ms=0.0, compute_ms=0.0, memory_ms=0.0, overhead_ms=0.0, switch_ms=0.0, bytes_moved=0,
                       bound="fused", note=note)
            rows.append(row)
            continue
        runs_at = _kernel_precision(kernel, costs, precision, units[where])
        row.update(_kernel_row(kernel, units[where], _traffic(kernel, costs, elem), runs_at, dram[where]))
        if runs_at != precision:
            row["precision"] = runs_at
        row.update(kernel=kernel.label, op_class=kernel.op_class, note=_kernel_note(kernel), switch_ms=0.0)
        if c.unknown:
            row["note"] = (row["note"] + "; " if row["note"] else "") + f"shape unknown: {', '.join(c.unknown)} (counted as 0)"
        if previous is not None and where != previous:
            row["switch_ms"] = units["fallback"].switch_overhead_us * 1e-3
            row["ms"] += row["switch_ms"]
            switches += 1
        previous = where
        rows.append(row)
    return rows, switches


def _per_op_type(rows: list[dict[str, Any]]) -> dict[str, dict]:
    per_op_type: dict[str, dict] = {}
    parts: dict[str, dict[str, float]] = {}
    for row in rows:
        key = row.get("kernel", row["op_type"])
        agg = per_op_type.setdefault(key, {"ms": 0.0, "nodes": 0, "macs": 0, "bound": "fused"})
        agg["ms"] += row["ms"]
        agg["nodes"] += 1
        agg["macs"] += row["macs"]
        share = parts.setdefault(key, {"compute": 0.0, "memory": 0.0, "overhead": 0.0})
        if row["bound"] != "fused":
            roof = max(row["compute_ms"], row["memory_ms"])
            share["compute" if row["compute_ms"] >= row["memory_ms"] else "memory"] += roof
            share["overhead"] += row["overhead_ms"]
    for key, agg in per_op_type.items():
        agg["bound"] = _dominant(parts[key])
    return per_op_type


def _dram_bandwidth(device: DeviceModel, unit: Resolved, where: str, weight_bytes: int) -> tuple[float | None, str]:
    """The weights' bandwidth (B/s) when they do not fit the unit's cache, else None; and why."""
    if where != "accelerator" or unit.cache_mb is None or unit.dram_bandwidth_gbs is None:
        return None, ""
    if weight_bytes <= unit.cache_mb * 1e6:
        return None, f"weights ({weight_bytes / 1e6:.3g} MB) fit the {unit.cache_mb:g} MB cache: read at the cache bandwidth"
    dram = unit.dram_bandwidth_gbs * 1e9 * unit.bandwidth_efficiency
    return dram, (f"weights ({weight_bytes / 1e6:.3g} MB) exceed the {unit.cache_mb:g} MB cache: read from DRAM at "
                  f"{unit.dram_bandwidth_gbs:.3g} GB/s x {unit.bandwidth_efficiency:g} every inference")


def _input_notes(inputs: ModelInputs, costs: GraphCosts) -> list[str]:
    notes = []
    for i in inputs.inputs:
        sources = "; ".join(dict.fromkeys(i.sources)) or "model"
        notes.append(f"input {i.name} {i.dtype} {'x'.join(map(str, i.shape)) or 'scalar'} ({sources})")
    notes += list(inputs.notes)
    notes.append("shapes found by " + "; ".join(costs.methods))
    unknown = costs.unknown
    if unknown:
        shown = ", ".join(f"{u['node']} ({u['op_type']})" for u in unknown[:8])
        notes.append(f"{len(unknown)} node(s) with tensors of unknown shape, costed without them: {shown}"
                     + (" ..." if len(unknown) > 8 else ""))
    return notes


def _fusion_notes(costs: GraphCosts, fused: Plan, device: DeviceModel) -> list[str]:
    reasons: dict[str, int] = {}
    for why in fused.free.values():
        key = why.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(fused.counts.items())) or "none"
    flags = (f"fuse_activations = {str(device.fuse_activations).lower()}, fuse_matmul_bias = "
             f"{str(device.fuse_matmul_bias).lower()}, fuse_attention = {str(device.fuse_attention).lower()}")
    return [f"{len(fused.kernels)} kernels execute for {len(costs.nodes)} nodes; cost nothing: "
            + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"),
            f"fused kernels: {kinds} ([device] {flags}; layernorm and gelu patterns always)"]


def _graph(model: "onnx.ModelProto | Path", device: DeviceModel, batch: int, inputs: ModelInputs | None,
           placed: bool) -> tuple[GraphCosts, Fusions, str]:
    """The graph to cost (the exported one, or the one ONNX Runtime runs), its fusions, and a note."""
    exported = Fusions(device.fuse_activations, device.fuse_matmul_bias, device.fuse_attention)
    if device.runtime_graph == "exported" or placed:
        return graph_costs(model, batch, inputs), exported, "costed: the exported graph, with the fusions below"
    level = device.runtime_graph.split("-", 1)[1]
    inputs = inputs or model_inputs(model, batch)
    try:
        import onnxruntime

        optimized = onnxruntime_graph(model, level)
    except (ImportError, RuntimeError) as exc:
        return (graph_costs(model, batch, inputs), exported,
                f"costed: the exported graph, with the fusions below ([device] runtime_graph = '{device.runtime_graph}', "
                f"but ONNX Runtime cannot optimize the model: {exc})")
    note = (f"costed: the graph ONNX Runtime {onnxruntime.__version__} runs after its '{level}' graph optimizations "
            f"([device] runtime_graph; {len(optimized.graph.node)} nodes): its fusions, the Q/DQ nodes it keeps (they run), "
            "float kernels at fp32 and integer kernels at int8")
    return graph_costs(optimized, batch, inputs, qdq_fused=False), Fusions(False, False, False, patterns=False), note


def _bytes_note(costs: GraphCosts, batch: int, precision: str) -> str:
    if costs.qdq_fused:
        return (f"batch {batch}, precision {precision}: each tensor moves min(its bytes at the graph's types, "
                f"elements x {ELEMENT_BYTES[precision]})")
    return f"batch {batch}, precision {precision}: each tensor moves its bytes at the type the runtime's graph gives it"


def estimate(model: "onnx.ModelProto | Path", device: DeviceModel, precision: str = "int8", batch: int = 1,
             placement: dict[str, str] | None = None, host: HostCpu | None = None,
             inputs: ModelInputs | None = None) -> Estimate:
    """Roofline estimate of `model` on `device` (see the module docstring) at `inputs` (default:
    the model's inputs resolved at `batch`, edgekd.graph.resolve). `placement` maps node names to
    "accelerator" (the default) or "fallback"; `host` overrides what a host_relative device reads
    from this machine."""
    if precision not in ELEMENT_BYTES:
        raise ValueError(f"precision must be one of {sorted(ELEMENT_BYTES)}, got '{precision}'")
    if precision not in device.precisions:
        raise ValueError(f"device '{device.name}' has no peak for '{precision}' (it has {list(device.precisions)})")
    placement = dict(placement or {})
    costs, fusions, graph_note = _graph(model, device, batch, inputs, bool(placement))
    _check_placement(costs.nodes, placement, device, precision)
    units: dict[str, Resolved] = {"accelerator": resolve(device, host)}
    if device.fallback is not None and "fallback" in placement.values():
        units["fallback"] = resolve_fallback(device.fallback)
    fused = plan(costs, fusions, lambda c: placement.get(c.name, "accelerator"))
    elem = ELEMENT_BYTES[precision] if costs.qdq_fused else 1 << 30
    weight_bytes = sum(min(c.weight_bytes, c.weight_elems * elem) for c in costs.nodes if c.name not in fused.free)
    dram, dram_note = {}, []
    for where, unit in units.items():
        dram[where], note = _dram_bandwidth(device, unit, where, weight_bytes)
        dram_note += [note] if note else []
    rows, switches = _rows(costs, fused, units, placement, precision, dram)
    latency_ms = device.invoke_overhead_us * 1e-3 + sum(r["ms"] for r in rows)
    assumptions = [
        graph_note, _bytes_note(costs, batch, precision), *_input_notes(costs.inputs, costs), *_fusion_notes(costs, fused, device), *dram_note,
        f"[device] invoke_overhead_us = {device.invoke_overhead_us:g} per inference",
    ]
    for where, unit in units.items():
        assumptions.append(f"{where} = {unit.name}")
        assumptions += unit.assumptions
    if switches:
        assumptions.append(f"{switches} accelerator<->fallback transitions along the node order")
    return Estimate(latency_ms=latency_ms, precision=precision, batch=batch, per_op_type=_per_op_type(rows),
                    per_node=rows, assumptions=assumptions, device=device.name, inputs=costs.inputs.to_json(),
                    unknown_shapes=costs.unknown, fusions=dict(fused.counts))


def estimate_for_target(model: Path, resolved: Any, precision: str, batch: int, inputs: ModelInputs) -> dict[str, Any]:
    """The estimate of `model` on a resolved target (edgekd.config.loading.Resolved[Target]) as
    `edgekd estimate` and device-only benches report it; ConfigError if the target lacks `precision`."""
    from edgekd.errors import ConfigError

    if precision not in resolved.config.precisions:
        raise ConfigError(f"target {resolved.name} does not run {precision} (it runs {', '.join(resolved.config.precisions)})",
                          "pick one of the target's precisions with --precision")
    result = estimate(model, resolved.config.device, precision=precision, batch=batch, inputs=inputs)
    return {"target": resolved.name, "method": "estimated", "inputs": inputs.to_json(), **result.to_json()}
