"""The TensorRT deploy bundle: the Q/DQ ONNX plus what builds and measures its engine on the device.

A TensorRT engine only loads on the GPU and TensorRT version it was built with, so the artefact a
host without the device ships is the ONNX and a build script (../shared/HARDWARE.md). Files:

  model.onnx       the Q/DQ model (a copy)
  build_engine.sh  bash: checks trtexec and its TensorRT version, then builds model.plan with the
                   target's settings (every argument shlex-quoted; nothing else is pasted in)
  trtexec.py       edgekd/backends/trtexec.py (stdlib only): command lines and output parsers
  bundle.json      target, TensorRT settings, input, sha256 of every file, what the runner does

The device-side runner (run_on_device.py, written elsewhere) runs build_engine.sh, then trtexec
--loadEngine, and parses the output with trtexec.py.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import edgekd
from edgekd.analysis.rules_tensorrt import QDQ, check_tensorrt
from edgekd.backends import trtexec
from edgekd.backends.tensorrt_config import TensorRTConfig
from edgekd.errors import EdgekdError
from edgekd.fsutil import atomic_copy, atomic_write_text, sha256_file
from edgekd.toolchain import require

MODEL, SCRIPT, HELPER, MANIFEST = "model.onnx", "build_engine.sh", "trtexec.py", "bundle.json"
ENGINE, TIMING_CACHE, TIMES = "model.plan", "timing.cache", "times.json"
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs trtexec (not on PATH)
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _model_input(qdq_onnx: Path, input_shape: tuple[int, ...], trt_major: int) -> tuple[str, bool]:
    """The model's single input name and whether the ONNX leaves any of its dims dynamic; checks
    `input_shape` against the dims the model fixes, that the model is one self-contained file, and
    that TensorRT takes its Q/DQ nodes (zero points 0, INT8 inside the network, float biases)."""
    onnx = require("onnx", "writing a TensorRT bundle")
    model = onnx.load(str(qdq_onnx), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise EdgekdError(f"{qdq_onnx} keeps weights in external data files; the bundle copies one ONNX file",
                          "save the model with all tensors inside it (onnx.save(..., save_as_external_data=False))")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise EdgekdError(f"{qdq_onnx} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a TensorRT bundle feeds exactly one")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(input_shape):
        raise EdgekdError(f"input_shape {input_shape} has rank {len(input_shape)}, but input '{inputs[0].name}' of {qdq_onnx} has rank {len(dims)}")
    for axis, (dim, size) in enumerate(zip(dims, input_shape)):
        if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
            raise EdgekdError(f"input_shape {input_shape} says {size} on axis {axis}, but {qdq_onnx} fixes it to {dim.dim_value}")
    dynamic = any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims)
    bad = [n for n in check_tensorrt(model, dla=False, gpu_fallback=False, trt_major=trt_major)
           if n.op_type in QDQ and n.runs_on == "unsupported"]
    if bad:
        shown = "; ".join(f"{n.name}: {n.reason}" for n in bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
        raise EdgekdError(f"TensorRT cannot take {len(bad)} Q/DQ nodes of {qdq_onnx}: {shown}",
                          "quantize for TensorRT: INT8 activations and weights (QInt8), extra_options "
                          "ActivationSymmetric=True and QuantizeBias=False")
    return inputs[0].name, dynamic


def _version_tag(version: str) -> int:
    """'10.3.0' -> 100300, the number trtexec prints as [TensorRT v100300] (TensorRT >= 10)."""
    major, minor, patch = (int(p) for p in version.split("."))
    return major * 10000 + minor * 100 + patch


def render_build_script(argv: list[str], cfg: TensorRTConfig, target_name: str, model_sha256: str) -> str:
    """build_engine.sh: bash, `set -euo pipefail`; every value below is shlex-quoted."""
    q = shlex.quote
    command = "\n".join(f"  {q(arg)}" for arg in argv[1:])
    return f"""#!/usr/bin/env bash
# Builds {ENGINE} from {MODEL} on this device (a TensorRT engine only loads on the GPU and the
# TensorRT version it was built with). Written by edgekd {edgekd.__version__}.
# Usage: bash {SCRIPT}        (TRTEXEC=/path/to/trtexec picks the trtexec to use)
set -euo pipefail
cd "$(dirname "${{BASH_SOURCE[0]}}")"

TARGET={q(target_name)}
TRT_MAJOR={cfg.trt_major}
MIN_VERSION={q(cfg.min_trt_version)}
MIN_TAG={_version_tag(cfg.min_trt_version)}  # MIN_VERSION as trtexec prints it: [TensorRT vMMmmpp]
POWER_MODE={q(cfg.power_mode or "")}
MODEL_SHA256={q(model_sha256)}
TRTEXEC="${{TRTEXEC:-trtexec}}"

if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
  if [ "$TRTEXEC" = trtexec ] && [ -x {q(JETPACK_TRTEXEC)} ]; then
    TRTEXEC={q(JETPACK_TRTEXEC)}
  else
    echo "error: trtexec not found ('$TRTEXEC' is not on PATH, nor is {JETPACK_TRTEXEC} there): install TensorRT ${{TRT_MAJOR}}.x (JetPack ships it) or set TRTEXEC=/path/to/trtexec" >&2
    exit 3
  fi
fi

help_text="$("$TRTEXEC" --help 2>&1 || true)"
tag="$(sed -n '/\\[TensorRT v[0-9][0-9]*\\]/{{s/.*\\[TensorRT v\\([0-9][0-9]*\\)\\].*/\\1/p;q;}}' <<<"$help_text")"
if [ -z "$tag" ]; then
  echo "error: '$TRTEXEC --help' printed no [TensorRT vNNNNNN] tag, so its TensorRT version is unknown; target $TARGET needs TensorRT ${{TRT_MAJOR}}.x >= $MIN_VERSION" >&2
  exit 3
fi
if [ "${{#tag}}" -ge 6 ]; then major="${{tag:0:${{#tag}}-4}}"; else major="${{tag:0:${{#tag}}-3}}"; fi
if [ "$major" != "$TRT_MAJOR" ] || [ "$tag" -lt "$MIN_TAG" ]; then
  echo "error: target $TARGET needs TensorRT ${{TRT_MAJOR}}.x >= $MIN_VERSION, but $TRTEXEC is TensorRT v$tag (major $major): build on a device with the target's JetPack/TensorRT, or change the target's [tensorrt] trt_major" >&2
  exit 3
fi

if command -v sha256sum >/dev/null 2>&1 && ! printf '%s  %s\\n' "$MODEL_SHA256" {q(MODEL)} | sha256sum -c --status -; then
  echo "error: {MODEL} does not match the sha256 in {MANIFEST}: the bundle was changed after edgekd wrote it" >&2
  exit 2
fi

if [ -n "$POWER_MODE" ] && command -v nvpmodel >/dev/null 2>&1; then
  mode="$(nvpmodel -q 2>/dev/null | sed -n 's/^NV Power Mode: *//p' || true)"
  if [ "$mode" != "$POWER_MODE" ]; then
    echo "warning: target $TARGET is measured in power mode $POWER_MODE, this device is in '$mode' (sudo nvpmodel -m <id> changes it)" >&2
  fi
fi

cmd=(
  "$TRTEXEC"
{command}
)
echo "+ ${{cmd[*]}}" >&2
"${{cmd[@]}}"
if [ ! -s {q(ENGINE)} ]; then
  echo "error: trtexec exited 0 but wrote no {ENGINE}" >&2
  exit 4
fi
"""


def _manifest(cfg: TensorRTConfig, target_name: str, input_name: str, input_shape: tuple[int, ...], dynamic: bool,
              build_argv: list[str], measure_argv: list[str], sha: dict[str, str]) -> dict[str, Any]:
    return {
        "format": "edgekd-tensorrt-bundle/1", "written_by": f"edgekd {edgekd.__version__}",
        "runtime": "tensorrt", "target": target_name,
        "model": MODEL, "model_sha256": sha[MODEL], "engine": ENGINE,
        "input_name": input_name, "input_shape": list(input_shape), "input_dynamic_in_model": dynamic,
        "tensorrt": {**cfg.model_dump(mode="json"), "min_trt_version": cfg.min_trt_version, "device": cfg.device_description},
        "build": {"script": SCRIPT, "argv": build_argv, "timing_cache": TIMING_CACHE,
                  "note": "argv[0] is replaced by $TRTEXEC (default: trtexec on PATH, else " + JETPACK_TRTEXEC + ")"},
        "measure": {"argv": measure_argv, "export_times": TIMES, "parser": HELPER,
                    "note": "Latency includes H2D and D2H copies (no --noDataTransfers); samples are --exportTimes latencyMs"},
        "runner": "run_on_device.py",
        "runner_does": [f"bash {SCRIPT} (checks trtexec and its TensorRT version, builds {ENGINE})",
                        f"trtexec --loadEngine={ENGINE} with --exportTimes={TIMES}",
                        f"parses the output with {HELPER}: parse_performance_summary, parse_exported_times"],
        "files": {name: sha[name] for name in (MODEL, SCRIPT, HELPER)},
    }


def write_bundle(qdq_onnx: Path, out_dir: Path, cfg: TensorRTConfig, target_name: str,
                 input_shape: tuple[int, ...]) -> list[Path]:
    """Write model.onnx, build_engine.sh, trtexec.py and bundle.json into `out_dir`; returns them."""
    if not _TARGET_NAME.match(target_name):
        raise EdgekdError(f"target name {target_name!r} is not a plain name (letters, digits, '.', '_', '-')")
    if not qdq_onnx.is_file():
        raise EdgekdError(f"the Q/DQ model {qdq_onnx} does not exist", "run the quantize stage first")
    input_shape = tuple(input_shape)
    if not input_shape or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in input_shape):
        raise EdgekdError(f"input_shape must be positive integers, got {input_shape!r}")
    input_name, dynamic = _model_input(qdq_onnx, input_shape, cfg.trt_major)
    shapes = {input_name: input_shape} if dynamic else None  # trtexec rejects --shapes for static models
    build_argv = trtexec.build_command(MODEL, ENGINE, cfg.model_dump(), input_shapes=shapes, timing_cache=TIMING_CACHE)
    measure_argv = trtexec.bench_command(ENGINE, cfg.model_dump(), input_shapes=shapes, export_times=TIMES)

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / name for name in (MODEL, SCRIPT, HELPER, MANIFEST)]
    atomic_copy(qdq_onnx, paths[0])
    sha = {MODEL: sha256_file(paths[0])}
    atomic_write_text(paths[1], render_build_script(build_argv, cfg, target_name, sha[MODEL]))
    paths[1].chmod(0o755)
    atomic_copy(Path(trtexec.__file__), paths[2])
    sha.update({SCRIPT: sha256_file(paths[1]), HELPER: sha256_file(paths[2])})
    manifest = _manifest(cfg, target_name, input_name, input_shape, dynamic, build_argv, measure_argv, sha)
    atomic_write_text(paths[3], json.dumps(manifest, indent=1) + "\n")
    return paths
