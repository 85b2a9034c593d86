"""Weight-only quantization of MatMul weights with onnxruntime.quantization's MatMulNBits quantizer
(`matmul_nbits_quantizer.MatMulNBitsQuantizer`, RTN): constant MatMul weights [K, N] become blocks
of `block_size` values along K with one float scale (and, asymmetric, one zero point) per block, run
by ONNX Runtime's `com.microsoft.MatMulNBits` kernel (activations stay float; on x86 MLAS dequantizes
or, with `accuracy_level` 4, quantizes activations to int8 per block on the fly). `bits` 4 or 8.

For decoders this is where the size and the decode step's time go (every token reads every weight).
A MatMul whose K is not a multiple of `block_size` is padded by the quantizer; a MatMul whose weight is
not a constant (attention's Q·Kᵀ) stays float.

`embedding`: the token embedding table (a constant float [vocabulary, hidden] read by a Gather of the
token ids) is quantized by the same quantizer to 4-bit blocks of `block_size` along the hidden axis,
run by `com.microsoft.GatherBlockQuantized` (what onnxruntime-genai's builder can do). In a small
decoder the table is most of what stays fp32 (SmolLM-135M: 113 MB of a ~190 MB INT4 engine); a decode
step reads one row of it, so the engine's size and memory shrink, not its decode time.
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import require

BITS = (4, 8)


class NoEmbedding(ValueError):
    """The embedding table was asked to be quantized and the graph has none edgekd recognises."""


@dataclass(frozen=True)
class WeightOnly:
    """One MatMulNBits setting: bits, block size along K, symmetric (no zero points), accuracy level
    (None: ORT's default; 4: int8 activations per block in the kernel, x86/ARM)."""

    bits: int = 4
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int | None = None
    embedding: bool = False  # the token embedding table too, 4-bit (GatherBlockQuantized)

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"MatMulNBits weight-only quantization takes bits {BITS}, not {self.bits}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"MatMulNBits block_size must be a power of two >= 16, not {self.block_size}")
        if self.embedding and self.bits != 4:
            raise ValueError("the embedding table is quantized to 4 bits only (onnxruntime.quantization's Gather quantization)")

    @property
    def name(self) -> str:
        return f"int{self.bits}-weight-only"

    def describe(self) -> str:
        level = "" if self.accuracy_level is None else f", accuracy_level {self.accuracy_level}"
        table = (f"; the token embedding table 4-bit {'symmetric' if self.symmetric else 'asymmetric'} in blocks of "
                 f"{self.block_size} along the hidden axis (com.microsoft.GatherBlockQuantized)" if self.embedding else "")
        return (f"onnxruntime.quantization MatMulNBitsQuantizer (RTN): {self.bits}-bit "
                f"{'symmetric' if self.symmetric else 'asymmetric'} weights in blocks of {self.block_size} along K, "
                f"one float scale per block{level}; activations float (com.microsoft.MatMulNBits){table}")


def quantize_weight_only(fp32_model: Path, out_model: Path, setting: WeightOnly) -> int:
    """Write `fp32_model` with its constant MatMul weights quantized per `setting` to `out_model`;
    returns how many MatMulNBits nodes it has (0: nothing was quantized)."""
    onnx = require("onnx", "weight-only quantization")
    require("onnxruntime", "weight-only quantization")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = matmul_weights(onnx.load(str(fp32_model)))
    table = token_embedding(model) if setting.embedding else None
    if setting.embedding and table is None:
        raise NoEmbedding(f"{fp32_model.name} has no token embedding table (a constant float [vocabulary, hidden] Gather of the token ids)")
    quantizer = MatMulNBitsQuantizer(model, bits=setting.bits, block_size=setting.block_size, is_symmetric=setting.symmetric,
                                     accuracy_level=setting.accuracy_level, nodes_to_include=[table] if table else None)
    _process(quantizer)
    out_model.parent.mkdir(parents=True, exist_ok=True)
    quantized = _int4_ir(quantizer.model.model)
    onnx.save(quantized, str(out_model))
    return sum(1 for n in quantized.graph.node if n.op_type == "MatMulNBits")


def quantize_embedding(model_path: Path, out_model: Path, block_size: int, symmetric: bool) -> None:
    """Write `model_path` (any precision: e.g. a dynamic INT8 graph) with only its token embedding table
    quantized as `quantize_weight_only` with `embedding` quantizes it (byte for byte the same table, so
    a prompt/decode split stores it once); raises NoEmbedding where there is no table."""
    onnx = require("onnx", "embedding quantization")
    require("onnxruntime", "embedding quantization")
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(model_path))
    table = token_embedding(model)
    if table is None:
        raise NoEmbedding(f"{model_path.name} has no token embedding table (a constant float [vocabulary, hidden] Gather of the token ids)")
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul"]  # the table only: its Gather is included by name
    quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=symmetric, nodes_to_exclude=matmuls,
                                     nodes_to_include=[table])
    _process(quantizer)
    onnx.save(_int4_ir(quantizer.model.model), str(out_model))


def _int4_ir(model: Any) -> Any:
    """`model` at IR version 10 or later where it holds INT4/UINT4 tensors (the quantized table): the
    quantizer leaves the IR version as it was when Gather is not among its op types (and, where it
    is, forces opset 21 onto a graph written for its own opset)."""
    from onnx import TensorProto

    if any(i.data_type in (TensorProto.INT4, TensorProto.UINT4) for i in model.graph.initializer):
        model.ir_version = max(model.ir_version, 10)
    return model


def _process(quantizer: Any) -> None:
    logging.disable(logging.INFO)  # the quantizer logs every node it visits
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer.process()
    finally:
        logging.disable(logging.NOTSET)


def token_embedding(model: Any) -> str | None:
    """The name of the Gather that reads the token embedding table: a constant float 2-D initializer
    indexed by an integer graph input (the token ids), on axis 0; None where there is none (or it has no
    name); NoEmbedding where something else reads the table too."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    ids = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in (TensorProto.INT64, TensorProto.INT32)
           and not any(w in i.name for w in ("position", "type", "mask"))}  # the token ids, not positions or segments
    producer = {o: n for n in model.graph.node for o in n.output}

    def source(name: str) -> str:  # through the reshapes and casts between the token ids and the Gather (GPT-2: a view)
        while name in producer and producer[name].op_type in ("Reshape", "Cast", "Squeeze", "Unsqueeze", "Flatten", "Identity"):
            name = producer[name].input[0]
        return name

    for node in model.graph.node:
        table = inits.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is not None and source(node.input[1]) in ids and len(table.dims) == 2 and table.data_type == TensorProto.FLOAT and axis == 0:
            readers = [n.name or n.op_type for n in model.graph.node if n is not node and table.name in n.input]
            if readers:  # a head tied to it (not untied by edgekd.graph.logits_to_keep): the fp32 table would stay beside the 4-bit one
                raise NoEmbedding(f"the token embedding table '{table.name}' is also read by {readers[0]} (a tied head?): "
                                  "quantizing it for the Gather would store it twice")
            return node.name or None
    return None


def matmul_weights(model: Any) -> Any:
    """`model` with every constant weight a MatMul reads as an initializer the quantizer can see (exact
    rewrites): a Constant node feeding MatMul's second input becomes an initializer, and a Gemm with a
    constant B (alpha 1, beta 1, no transA; GPT-2's Conv1D projections) becomes MatMul (+ Add of C)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    weights = {n.input[1] for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1}
    for name in weights & set(constants):
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(constants[name].attribute[0].t), name))
        graph.node.remove(constants[name])
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.input[1] not in inits or not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            weight = f"{node.input[1]}_t"
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[node.input[1]]).T.copy(), weight))
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
