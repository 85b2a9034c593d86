"""One KV-cache decoder graph that runs its prompt pass on one model and its decode steps on another.

Weight-only INT4 (MatMulNBits) has the fastest decode step on x86, where one new token makes every
MatMul a matrix-vector product and the time is reading the weights; its prompt pass is slower than
dynamic INT8's (on the AVX-512 VNNI host 193 vs 104 ms for a 128-token prompt of a 135 M Llama: with
many rows MatMulNBits is not the faster kernel). `split_by_phase` writes both graphs as the branches
of an ONNX `If` on the number of new tokens (more than one: the prompt branch, else the decode
branch), so one engine file, one session and the same inputs and outputs serve both phases. Both
graphs must have the same inputs and outputs; weights the two share byte for byte (the token
embedding, norms) are stored once, the rest twice (the engine is larger than either part).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

EXTERNAL_OVER_BYTES = 1_800_000_000  # protobuf's 2 GB limit, with room: larger engines keep weights in a .data file


class NotSplittable(ValueError):
    """Why the two graphs cannot be branches of one engine."""


@dataclass(frozen=True)
class PhaseSplit:
    prompt: str  # file names of the two parts
    decode: str
    shared: int  # initializers stored once for both branches
    bytes: int  # the combined graph's serialized size

    def describe(self) -> str:
        return (f"one graph, an If on the new-token count: more than 1 token (the prompt pass) runs {self.prompt}, 1 token (a decode "
                f"step) runs {self.decode}; {self.shared} weights both hold byte for byte stored once (edgekd.graph.phase_split)")


def _io(graph: "onnx.GraphProto") -> tuple[list[str], list[str]]:
    return [i.name for i in graph.input], [o.name for o in graph.output]


def _digest(init: "onnx.TensorProto") -> bytes:
    from onnx import numpy_helper

    return hashlib.sha256(f"{init.data_type}{list(init.dims)}".encode() + numpy_helper.to_array(init).tobytes()).digest()


def _branch(model: "onnx.ModelProto", tag: str, shared: dict[bytes, str], outer: dict[str, "onnx.TensorProto"]) -> "onnx.GraphProto":
    """`model`'s graph as an If branch: its inputs (those with a default too) read from the outer
    scope, every other name prefixed with `tag`. Its initializers move to the outer graph (`outer`, by
    name): those whose bytes are in `shared` (digest -> outer name) once for both branches. Outer-scope weights, not branch-local ones:
    ONNX Runtime's session of a 135 M Llama's split held 0.58 GB so against 0.90 GB with each branch
    holding its own, at the same decode-step and prompt-pass times (measured 2026-12-07)."""
    from onnx import helper

    graph, rename = model.graph, {}
    inputs = {i.name for i in graph.input}
    for init in graph.initializer:
        if init.name in inputs:  # an input's default (e.g. edgekd.graph.logits_to_keep): one outer input for both
            outer.setdefault(init.name, init)
            continue
        name = shared.get(_digest(init), f"{tag}/{init.name}")
        if name not in outer:
            copy = type(init)()
            copy.CopyFrom(init)
            copy.name = name
            outer[name] = copy
        rename[init.name] = name
    nodes = []
    for node in graph.node:
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise NotSplittable(f"node {node.name or node.op_type} holds a subgraph ({node.op_type}); edgekd splits flat graphs only")
        rename.update({name: f"{tag}/{name}" for name in node.output if name})
        new = type(node)()
        new.CopyFrom(node)
        new.name = f"{tag}/{node.name}" if node.name else ""
        new.input[:] = [rename.get(n, n) for n in node.input]
        new.output[:] = [rename.get(n, n) for n in node.output]
        nodes.append(new)
    outputs = []
    for out in graph.output:
        info = type(out)()
        info.CopyFrom(out)
        info.name = rename.get(out.name, out.name)
        outputs.append(info)
    return helper.make_graph(nodes, tag, [], outputs)


def split_by_phase(prompt: Path, decode: Path, out: Path, tokens: str) -> PhaseSplit:
    """Write to `out` one graph running `prompt` when input `tokens` (the token ids, [batch, new tokens])
    has more than one column, else `decode`. Raises NotSplittable where the two differ in inputs or outputs."""
    import onnx
    from onnx import TensorProto, helper

    first, second = onnx.load(str(prompt)), onnx.load(str(decode))
    if _io(first.graph) != _io(second.graph):
        raise NotSplittable(f"{prompt.name} and {decode.name} differ in inputs or outputs: {_io(first.graph)} vs {_io(second.graph)}")
    inputs, outputs = _io(first.graph)
    if tokens not in inputs:
        raise NotSplittable(f"{prompt.name} has no input {tokens!r}")
    defaults = [{i.name: _digest(i) for i in m.graph.initializer if i.name in inputs} for m in (first, second)]
    if defaults[0] != defaults[1]:
        raise NotSplittable(f"{prompt.name} and {decode.name} differ in their inputs' defaults: "
                            f"{sorted(defaults[0])} vs {sorted(defaults[1])}")
    digests = {_digest(i) for i in first.graph.initializer}
    shared = {d: f"shared/{i.name}" for i in second.graph.initializer if (d := _digest(i)) in digests}
    outer = {t.name: t for t in (helper.make_tensor("phase/one", TensorProto.INT64, [], [1]), helper.make_tensor("phase/axis", TensorProto.INT64, [], [1]))}
    branches = {"then_branch": _branch(first, "prompt", shared, outer), "else_branch": _branch(second, "decode", shared, outer)}
    nodes = [helper.make_node("Shape", [tokens], ["phase/shape"], name="phase/Shape"),
             helper.make_node("Gather", ["phase/shape", "phase/axis"], ["phase/new_tokens"], name="phase/Gather", axis=0),
             helper.make_node("Greater", ["phase/new_tokens", "phase/one"], ["phase/is_prompt"], name="phase/Greater"),
             helper.make_node("If", ["phase/is_prompt"], outputs, name="phase/If", **branches)]
    graph = helper.make_graph(nodes, f"{first.graph.name}-by-phase", list(first.graph.input), list(first.graph.output), list(outer.values()))
    opsets = {o.domain: o.version for o in [*second.opset_import, *first.opset_import]}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              ir_version=max(first.ir_version, second.ir_version), producer_name="edgekd.graph.phase_split")
    size = model.ByteSize()
    if size > EXTERNAL_OVER_BYTES:
        onnx.save(model, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{out.name}.data")
    else:
        onnx.save(model, str(out))
    return PhaseSplit(prompt.name, decode.name, len(shared), size)
