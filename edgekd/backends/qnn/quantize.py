"""Quantization for the Qualcomm HTP: static shapes, then uint8/uint16 QDQ through ONNX Runtime's QNN
recipe (`qnn_preprocess_model`, `get_qnn_qdq_config`, `quantize`), with 16-bit activations around the
op types the target names (mixed precision) when the rest of the graph runs 8-bit activations.

Mixed precision (transformers): LayerNormalization and Softmax lose the most at 8 bits (a LayerNorm
output feeds every projection of the next block; Softmax probabilities of a 128-token sequence sit
near 1/128, a few uint8 steps). With `[qnn] uint16_activation_ops` those ops read and write uint16
tensors: their activation input is converted from uint8 for them alone (Q/DQ u8 -> Q/DQ u16), their
output stays uint16 for MatMuls (the HTP runs u16 x u8 MatMuls) and is converted back to uint8 for
every other consumer. The overrides are written here (ONNX Runtime's tensor_quant_overrides with
"convert" entries) rather than by get_qnn_qdq_config's own fixer, which makes every input of a
consumer 16-bit (a Softmax output's MatMul would read V as uint16 too: u16 x u16, which the HTP
rules here do not allow).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.backends.qnn.rules import shape_problems
from edgekd.common.fsutil import atomic_write_bytes
from edgekd.common.toolchain import require
from edgekd.config.qnn import QnnConfig
from edgekd.errors import ConfigError, DataError
from edgekd.graph.inputs import ModelInputs
from edgekd.graph.transformer import name_nodes

if TYPE_CHECKING:
    import onnx

    from edgekd.graph.quantize import Calibration


def fix_shapes(model_in: Path, model_out: Path, inputs: ModelInputs) -> None:
    """Every input at its resolved shape and every output static (the HTP needs static shapes)."""
    onnx = require("onnx", "fixing ONNX shapes")
    from edgekd.graph.shapes import static_model

    model = static_model(onnx.load(str(model_in)), inputs)
    problems = shape_problems(model)
    empty = [v.name for v in model.graph.input if any(d.HasField("dim_value") and d.dim_value == 0
                                                      for d in v.type.tensor_type.shape.dim)]
    if empty:
        raise ConfigError(f"{model_in}: input(s) {', '.join(empty)} are empty at inputs {inputs.describe()} (a 0 dim, "
                          "such as an empty KV cache); the HTP runs no empty tensors",
                          "give those inputs a non-empty shape with --shape (a decoder's past length > 0, e.g. "
                          "--shape past_key_values.0.key=BxHEADSx16xHEAD_DIM for 16 cached tokens, for every past input)")
    if problems:
        raise ConfigError(f"{model_in}: still dynamic at inputs {inputs.describe()}: {'; '.join(problems)}",
                          "give every input a fixed shape (--shape) or export with static shapes (HTP graphs need them)")
    atomic_write_bytes(model_out, model.SerializeToString())


_ELEMENTWISE = ("Add", "Sub", "Mul", "Div")  # producers widened with the op they feed


def _wide_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[onnx.NodeProto]:
    """The nodes of `op_types` and the elementwise node producing each one's activation input (the
    residual Add before a LayerNorm, the mask Add before a Softmax): their sum is kept at 16 bits
    instead of being rounded to 8 bits and converted up."""
    producers = {out: node for node in model.graph.node for out in node.output}
    wide = {n.name for n in model.graph.node if n.op_type in op_types}
    for node in [n for n in model.graph.node if n.name in wide]:
        source = producers.get(node.input[0])
        if source is not None and source.op_type in _ELEMENTWISE:
            wide.add(source.name)
    return [n for n in model.graph.node if n.name in wide]


def uint16_overrides(model: onnx.ModelProto, op_types: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """tensor_quant_overrides that give every node of `op_types` (and the elementwise node feeding
    it) uint16 activations in a uint8 graph (see the module docstring). Nodes must be named
    (edgekd.graph.transformer.name_nodes)."""
    from onnxruntime.quantization import QuantType

    u8, u16 = QuantType.QUInt8, QuantType.QUInt16
    constants = {i.name for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    wide_nodes = _wide_nodes(model, op_types)
    wide_names, wide_outputs = {n.name for n in wide_nodes}, {n.output[0] for n in wide_nodes}

    def takes_u16(node: onnx.NodeProto, tensor: str) -> bool:
        """A MatMul whose other input is 8-bit: u16 x u8 (or u8 x u16) is a pair the HTP runs."""
        others = [name for name in node.input[:2] if name != tensor]
        return node.op_type == "MatMul" and len(others) == 1 and others[0] not in wide_outputs

    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in wide_nodes:
        for source in (name for name in node.input if name and name not in constants and name not in wide_outputs):
            entry = overrides.setdefault(source, [{"quant_type": u8, "convert": {"quant_type": u16, "recv_nodes": set()}}])
            entry[0]["convert"]["recv_nodes"].add(node.name)
        narrow = {c.name for c in consumers.get(node.output[0], []) if c.name not in wide_names and not takes_u16(c, node.output[0])}
        overrides[node.output[0]] = [{"quant_type": u16, **({"convert": {"quant_type": u8, "recv_nodes": narrow}} if narrow else {})}]
    return overrides


def _prepare(fp32_model: Path, tmp: Path, inputs: ModelInputs) -> Path:
    """Static shapes, then qnn_preprocess_model; returns the model to quantize (nodes named)."""
    onnx = require("onnx", "HTP quantization")
    from onnxruntime.quantization.execution_providers.qnn import qnn_preprocess_model

    fixed, prepared = tmp / "fixed.onnx", tmp / "prepared.onnx"
    fix_shapes(fp32_model, fixed, inputs)
    model = onnx.load(str(fixed))
    # onnxruntime 1.32's qnn_preprocess_model fails on any metadata_props (dict.update on protobuf entries)
    del model.metadata_props[:]
    # qnn_preprocess_model writes its (ORT-optimized) model only when it changed something; naming the
    # (already fixed) input shapes counts as a change, so constant folding and Identity removal always apply
    shapes = [(name, ",".join(map(str, shape))) for name, shape in inputs.shapes().items()]
    source = prepared if qnn_preprocess_model(model, str(prepared), dynamic_input_shapes=shapes) else fixed
    model = onnx.load(str(source))
    name_nodes(model)
    onnx.save(model, str(prepared))
    return prepared


def mask_floor_overrides(model: onnx.ModelProto, inputs: ModelInputs, overrides: dict[str, list[dict[str, Any]]]) -> int:
    """In `overrides`: every attention mask and masked-scores tensor quantized on [-MASK_FLOOR, max],
    every attention Softmax output on [0, 1] (the HTP runs the mask path quantized:
    edgekd.graph.transformer says why). Returns how many masked Softmax inputs it covers."""
    from edgekd.graph.transformer import MASK_FLOOR, mask_path

    path = mask_path(model, [i.name for i in inputs.inputs if i.role == "attention_mask"])
    ranges = {t: {"rmin": -MASK_FLOOR} for pair in path.masked for t in pair}
    ranges.update({t: {"rmin": 0.0, "rmax": 1.0} for t in path.probabilities})
    for tensor, limits in ranges.items():
        entry = overrides.setdefault(tensor, [{}])[0]
        values = {k: np.array(v, dtype=np.float32) for k, v in limits.items()}
        entry.update(values)
        if "convert" in entry:
            entry["convert"].update(values)
    return len(path.masked)


def quantize_for_htp(fp32_model: Path, out_model: Path, calib: Calibration, cfg: QnnConfig, calibrate_method: str,
                     inputs: ModelInputs) -> int:
    """Shapes fixed to `inputs` (batch 1), `qnn_preprocess_model` (shape inference, ORT's basic
    optimizations and QNN-friendly fusions such as Erf-GELU to Gelu), then `get_qnn_qdq_config` +
    `quantize`: a QDQ model with uint8 weights, uint8 or uint16 activations (uint16 around
    `cfg.uint16_activation_ops` in a uint8 graph), attention masks on [-MASK_FLOOR, max]
    (mask_floor_overrides) and static shapes, calibrated one sample per batch on every row of
    `calib` (named inputs). Returns how many masked Softmax inputs got the mask floor."""
    onnx = require("onnx", "HTP quantization")
    require("onnxruntime", "HTP quantization")
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

    from edgekd.graph.quantize import (
        CALIBRATE_METHODS,
        calibration_reader,
        quiet_quantizer_logs,
    )
    from edgekd.graph.quantize import calibrate_method as method

    if calibrate_method not in CALIBRATE_METHODS:
        raise ConfigError(f"calibrate_method '{calibrate_method}' is not one of {', '.join(CALIBRATE_METHODS)}")
    if not calib or len(next(iter(calib.values()))) == 0:
        raise DataError("HTP quantization got no calibration samples", "give the project a non-empty calibration split")
    types = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}
    out_model.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_model.parent, prefix=".htp-quant-") as tmp:
        quantized = Path(tmp, "qdq.onnx")
        with contextlib.redirect_stdout(io.StringIO()), quiet_quantizer_logs():  # calibrators print progress
            source = _prepare(fp32_model, Path(tmp), inputs)
            model = onnx.load(str(source))
            mixed = cfg.activation_type == "uint8" and cfg.uint16_activation_ops
            overrides = uint16_overrides(model, cfg.uint16_activation_ops) if mixed else {}
            floors = mask_floor_overrides(model, inputs, overrides)
            qdq_config = get_qnn_qdq_config(
                str(source), calibration_reader(calib, float_inputs_as="float32"), calibrate_method=method(calibrate_method),
                activation_type=types[cfg.activation_type], weight_type=types[cfg.weight_type],
                per_channel=cfg.per_channel, init_overrides=overrides or None, add_qtype_converts=False,
            )
            quantize(str(source), str(quantized), qdq_config)
        os.replace(quantized, out_model)
    return floors
