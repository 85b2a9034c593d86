"""A KV-cache decoder in the TensorRT bundle: one engine, one optimization profile over the fixed
context (edgekd.graph.decoder.DecoderShapes), measured twice on the device.

- build: `--minShapes` (1 token, empty past), `--optShapes` at the decode step (1 token after C - 1
  cached ones: what every generated token costs, so TensorRT tunes its kernels there), `--maxShapes`
  (P prompt tokens; mask and past at the full context C). One profile, because trtexec's build
  options hold one min/opt/max per input name (samples/common/sampleOptions.cpp getShapesBuild), and
  one engine keeps one copy of the weights on the device.
- measure: the decode step (`--shapes` at the decode shapes, the bundle's `measure.argv`) and the
  prefill (`--shapes` at P prompt tokens with an empty past, `decoder.measure_prefill.argv`), each with
  feedgen's values (`inputs/` and `inputs/prefill/`).

DLA takes no dynamic shapes (min = opt = max), so a decoder's range cannot be built for it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.backends.tensorrt import trtexec
from edgekd.errors import EdgekdError
from edgekd.graph.decoder import DecoderShapes
from edgekd.graph.inputs import ModelInputs

PREFILL = "prefill"


def at_shapes(inputs: ModelInputs, shapes: dict[str, tuple[int, ...]], note: str) -> ModelInputs:
    """`inputs` with every shape replaced by `shapes`' (the feeds for one phase)."""
    return ModelInputs(tuple(dataclasses.replace(i, shape=shapes[i.name], sources=(note,) * len(shapes[i.name]))
                             for i in inputs.inputs), (*inputs.notes, note))


@dataclass(frozen=True)
class DecoderPlan:
    """The decoder's build ranges, its two measure command lines and their input files."""

    shapes: DecoderShapes
    ranges: tuple[dict[str, tuple[int, ...]], ...]
    decode_argv: list[str]
    decode_files: dict[str, str]
    prefill_argv: list[str]
    prefill_files: dict[str, str]

    def manifest(self) -> dict[str, Any]:
        s = self.shapes
        return {"prompt_tokens": s.prompt, "context": s.context,
                "profile": {"min": s.minimum, "opt": s.decode, "max": s.maximum},
                "decode_shapes": s.decode, "prefill_shapes": s.prefill,
                "measure_decode": {"argv": self.decode_argv, "input_files": self.decode_files},
                "measure_prefill": {"argv": self.prefill_argv, "input_files": self.prefill_files},
                "note": (f"one optimization profile from 1 token with an empty past to {s.prompt} prompt tokens and a "
                         f"{s.context}-token context, tuned (opt) at the decode step; measure.argv is the decode step, "
                         "decoder.measure_prefill the prefill")}


def decoder_plan(cfg: dict[str, Any], shapes: DecoderShapes, inputs: ModelInputs, out_dir: Path, export_times: str,
                 write_files: Any) -> DecoderPlan:
    """The plan for `shapes`; `write_files(inputs, folder, phase)` writes the input files
    (edgekd.deploy.tensorrt_bundle.write_input_files). Refuses DLA."""
    if cfg.get("dla_core") is not None:
        raise EdgekdError("a KV-cache decoder needs dynamic shapes (prefill and decode), and DLA takes none (min = opt = max)",
                          "build decoders for the GPU: a jetson-orin target without [tensorrt] dla_core")
    decode_inputs = at_shapes(inputs, shapes.decode, f"decode step: 1 token after {shapes.context - 1} cached")
    prefill_inputs = at_shapes(inputs, shapes.prefill, f"prefill: {shapes.prompt} prompt tokens, empty past")
    decode_files = write_files(decode_inputs, out_dir, "")
    prefill_files = write_files(prefill_inputs, out_dir, PREFILL)
    engine = "model.plan"
    decode_argv = trtexec.bench_command(engine, cfg, input_shapes=shapes.decode, export_times=export_times, input_files=decode_files)
    prefill_argv = trtexec.bench_command(engine, cfg, input_shapes=shapes.prefill, export_times=f"{PREFILL}_{export_times}",
                                         input_files=prefill_files)
    return DecoderPlan(shapes, (shapes.minimum, shapes.decode, shapes.maximum), decode_argv, decode_files, prefill_argv, prefill_files)
