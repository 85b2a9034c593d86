"""The TensorRT deploy bundle: the Q/DQ ONNX plus what builds and measures its engine on the device.

A TensorRT engine only loads on the GPU and TensorRT version it was built with, so the artefact a
host without the device ships is the ONNX and a build script (../shared/HARDWARE.md). Files:

  model.onnx       the Q/DQ model (a copy)
  build_engine.sh  bash: checks trtexec and its TensorRT version, then builds model.plan with the
                   target's settings (every argument shlex-quoted; nothing else is pasted in)
  trtexec.py       edgekd/backends/tensorrt/trtexec.py (stdlib only): command lines and output parsers
  feedgen.py       edgekd/graph/feedgen.py (numpy only): the generator the input files come from
  inputs/*.bin     one raw file per input: the values trtexec feeds (--loadInputs)
  run_on_device.py the device-side runner
  device_runtimes.py
                   edgekd/deploy/device_runtimes.py (numpy only): how the runner measures each
                   runtime; the runner loads it from the bundle
  bundle.json      target, TensorRT settings, every input, sha256 of every file, what the runner does

Shapes: every input the ONNX leaves dynamic is pinned to its resolved shape with one --shapes
(min = opt = max: one optimization profile, which DLA needs and which is what edgekd measures);
a model without dynamic inputs gets no --shapes (trtexec refuses them for static models).

Input values: trtexec's own random values fit float inputs, but not the inputs whose values
matter: random integers as token ids fall outside the embedding table (invalid indices for ONNX's
Gather: whatever TensorRT computes then is not the model's real work), random integers in an
attention mask or as position ids are inputs the model never sees. So the bundle writes what
edgekd.graph.feedgen makes for EVERY non-empty input, not only those whose values matter: one
rule, the same values the ONNX Runtime runner and edgekd's host-side bench feed, reproducible runs,
and small files at batch 1 (an image input is under a MiB). Inputs of zero elements (a decoder's
past at past length 0) need no file; their shape alone is given. Files hold the input's own
dtype: int64 ids are 8 bytes each, which is what TensorRT 10 and 11 (the only majors a target may
name) expect for an INT64 network input.

The runner (run_on_device.py, through device_runtimes.py) runs build_engine.sh, then bundle.json's
measure.argv (trtexec --loadEngine --shapes --loadInputs --exportTimes), and parses the output with
trtexec.py. Format 3 is format 2 plus device_runtimes.py ("runtimes"); the runner refuses 2. Tested
here: the files, `bash -n`, and build_engine.sh and the runner against a stand-in trtexec that
replays real trtexec output. A real trtexec and TensorRT run only on the device.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.analysis.rules_tensorrt import QDQ, check_tensorrt
from edgekd.backends.tensorrt import trtexec
from edgekd.common.fsutil import (
    atomic_copy,
    atomic_write_bytes,
    atomic_write_text,
    sha256_file,
)
from edgekd.common.toolchain import require
from edgekd.common.version import __version__
from edgekd.config.tensorrt import TensorRTConfig
from edgekd.deploy.ort_bundle import (
    FEEDGEN,
    RUNNER,
    RUNTIMES,
    copy_feedgen,
    copy_runner,
)
from edgekd.errors import EdgekdError
from edgekd.graph.decoder import DecoderShapes
from edgekd.graph.feeds import make_feeds
from edgekd.graph.inputs import ModelInputs

MODEL, SCRIPT, HELPER, MANIFEST = "model.onnx", "build_engine.sh", "trtexec.py", "bundle.json"
ENGINE, TIMING_CACHE, TIMES, INPUTS_DIR = "model.plan", "timing.cache", "times.json", "inputs"
FORMAT = "edgekd-tensorrt-bundle/3"  # run_on_device.py FORMATS must name it
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs trtexec (not on PATH)
_TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _check_inputs(qdq_onnx: Path, graph: Any, inputs: ModelInputs) -> list[str]:
    """The names of the inputs the ONNX leaves dynamic; checks that `inputs` name exactly the
    model's inputs, with its rank and the dims it fixes."""
    initializers = {t.name for t in graph.initializer}
    declared = {i.name: i for i in graph.input if i.name not in initializers}
    if sorted(declared) != sorted(inputs.names()):
        raise EdgekdError(f"{qdq_onnx} has inputs {', '.join(declared) or 'none'}, but the resolved inputs are "
                          f"{', '.join(inputs.names()) or 'none'}", "resolve the inputs from this model (edgekd.graph.resolve.load_inputs)")
    dynamic = []
    for spec in inputs.inputs:
        tensor_type = declared[spec.name].type.tensor_type
        if not tensor_type.HasField("shape"):  # no shape declared (resolved from --shape): dynamic
            dynamic.append(spec.name)
            continue
        dims = tensor_type.shape.dim
        shown = "x".join(map(str, spec.shape))
        if len(dims) != len(spec.shape):
            raise EdgekdError(f"input '{spec.name}' is {shown} (rank {len(spec.shape)}), but {qdq_onnx} declares rank {len(dims)}")
        for axis, (dim, size) in enumerate(zip(dims, spec.shape)):
            if dim.HasField("dim_value") and dim.dim_value > 0 and dim.dim_value != size:
                raise EdgekdError(f"input '{spec.name}' is {shown}: {size} on axis {axis}, but {qdq_onnx} fixes it to {dim.dim_value}")
        if any(not (d.HasField("dim_value") and d.dim_value > 0) for d in dims):
            dynamic.append(spec.name)
    return dynamic


def _check_model(qdq_onnx: Path, inputs: ModelInputs, trt_major: int) -> list[str]:
    """The dynamic inputs (see _check_inputs); checks that the model is one self-contained file
    and that TensorRT takes its Q/DQ nodes (zero points 0, INT8 inside the network, float biases)."""
    onnx = require("onnx", "writing a TensorRT bundle")
    model = onnx.load(str(qdq_onnx), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise EdgekdError(f"{qdq_onnx} keeps weights in external data files; the bundle copies one ONNX file",
                          "save the model with all tensors inside it (onnx.save(..., save_as_external_data=False))")
    dynamic = _check_inputs(qdq_onnx, model.graph, inputs)
    bad = [n for n in check_tensorrt(model, dla=False, gpu_fallback=False, trt_major=trt_major)
           if n.op_type in QDQ and n.runs_on == "unsupported"]
    if bad:
        shown = "; ".join(f"{n.name}: {n.reason}" for n in bad[:3]) + (f"; ... ({len(bad)} in all)" if len(bad) > 3 else "")
        raise EdgekdError(f"TensorRT cannot take {len(bad)} Q/DQ nodes of {qdq_onnx}: {shown}",
                          "quantize for TensorRT: INT8 activations and weights (QInt8), extra_options "
                          "ActivationSymmetric=True and QuantizeBias=False")
    return dynamic


def input_file_name(index: int, name: str, phase: str = "") -> str:
    """`inputs/00_input_ids.bin` (a decoder's prefill: `inputs/prefill/...`): the index keeps names
    apart that differ only in characters a file name (and trtexec's --loadInputs) cannot hold."""
    return f"{INPUTS_DIR}/{phase + '/' if phase else ''}{index:02d}_{_UNSAFE.sub('_', name)}.bin"


def write_input_files(inputs: ModelInputs, folder: Path, phase: str = "") -> dict[str, str]:
    """What edgekd.graph.feedgen makes for every input with at least one element, as raw
    little-endian files under `folder` (the layout trtexec --loadInputs reads on x86 and aarch64);
    returns {input name: path relative to `folder`}."""
    feeds = make_feeds(inputs)
    files = {}
    for index, spec in enumerate(inputs.inputs):
        array = feeds[spec.name]
        if array.size == 0:
            continue
        relative = input_file_name(index, spec.name, phase)
        atomic_write_bytes(folder / relative, np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
        files[spec.name] = relative
    return files


def _version_tag(version: str) -> int:
    """'10.3.0' -> 100300, the number trtexec prints as [TensorRT v100300] (TensorRT >= 10)."""
    major, minor, patch = (int(p) for p in version.split("."))
    return major * 10000 + minor * 100 + patch


def _script_checks() -> str:
    """build_engine.sh's checks before the build: trtexec found, its TensorRT the target's, the
    model unchanged, the power mode the target's (a warning). Its variables come before it."""
    q = shlex.quote
    return f"""if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
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
"""


def render_build_script(argv: list[str], cfg: TensorRTConfig, target_name: str, model_sha256: str) -> str:
    """build_engine.sh: bash, `set -euo pipefail`; every value below is shlex-quoted."""
    q = shlex.quote
    command = "\n".join(f"  {q(arg)}" for arg in argv[1:])
    return f"""#!/usr/bin/env bash
# Builds {ENGINE} from {MODEL} on this device (a TensorRT engine only loads on the GPU and the
# TensorRT version it was built with). Written by edgekd {__version__}.
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

{_script_checks()}
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


def _manifest(cfg: TensorRTConfig, target_name: str, inputs: ModelInputs, dynamic: list[str],
              argv: dict[str, list[str]], input_files: dict[str, str], sha: dict[str, str]) -> dict[str, Any]:
    return {
        "format": FORMAT, "written_by": f"edgekd {__version__}",
        "runtime": "tensorrt", "target": target_name,
        "model": MODEL, "model_sha256": sha[MODEL], "engine": ENGINE,
        "inputs": [i.to_json() for i in inputs.inputs], "dynamic_inputs": dynamic, "feedgen": FEEDGEN.name,
        "tensorrt": {**cfg.model_dump(mode="json"), "min_trt_version": cfg.min_trt_version, "device": cfg.device_description},
        "build": {"script": SCRIPT, "argv": argv["build"], "timing_cache": TIMING_CACHE,
                  "note": "argv[0] is replaced by $TRTEXEC (default: trtexec on PATH, else " + JETPACK_TRTEXEC + "); "
                          "--shapes pins every input the ONNX leaves dynamic (min = opt = max)"},
        "measure": {"argv": argv["measure"], "export_times": TIMES, "parser": HELPER, "input_files": input_files,
                    "note": "Latency includes H2D and D2H copies (no --noDataTransfers); samples are --exportTimes latencyMs; "
                            f"--loadInputs feeds {FEEDGEN.name}'s values (raw little-endian) for every non-empty input"},
        "runner": RUNNER.name, "runtimes": RUNTIMES.name,
        "runner_does": [f"bash {SCRIPT} (checks trtexec and its TensorRT version, builds {ENGINE})",
                        f"trtexec --loadEngine={ENGINE} with --loadInputs and --exportTimes={TIMES}",
                        f"parses the output with {HELPER}: parse_performance_summary, parse_exported_times"],
        "files": sha,
    }


def _check_arguments(qdq_onnx: Path, target_name: str, inputs: ModelInputs) -> None:
    if not _TARGET_NAME.match(target_name):
        raise EdgekdError(f"target name {target_name!r} is not a plain name (letters, digits, '.', '_', '-')")
    if not qdq_onnx.is_file():
        raise EdgekdError(f"the Q/DQ model {qdq_onnx} does not exist", "run the quantize stage first")
    if not inputs.inputs:
        raise EdgekdError(f"no resolved inputs given for {qdq_onnx}", "resolve them with edgekd.graph.resolve.load_inputs")
    for spec in inputs.inputs:
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in spec.shape):
            raise EdgekdError(f"input '{spec.name}' has shape {spec.shape!r}; dims must be non-negative integers")


def write_bundle(qdq_onnx: Path, out_dir: Path, cfg: TensorRTConfig, target_name: str,
                 inputs: ModelInputs, decoder: DecoderShapes | None = None) -> list[Path]:
    """Write model.onnx, build_engine.sh, trtexec.py, feedgen.py, run_on_device.py,
    device_runtimes.py, the input files and bundle.json into `out_dir` for the model's `inputs`
    (every input, resolved to one shape; a KV-cache decoder: `decoder`'s prefill-to-decode range,
    edgekd.deploy.tensorrt_decoder); returns the files written."""
    _check_arguments(qdq_onnx, target_name, inputs)
    dynamic = _check_model(qdq_onnx, inputs, cfg.trt_major)
    shapes = {name: inputs.shapes()[name] for name in dynamic} or None  # trtexec rejects --shapes for static models
    try:
        trtexec.shapes_spec(shapes or {})
        trtexec.inputs_spec({spec.name: "x" for spec in inputs.inputs})
    except ValueError as exc:
        raise EdgekdError(f"{qdq_onnx}: {exc}", "rename the model's inputs (ONNX graph input names)") from None

    out_dir.mkdir(parents=True, exist_ok=True)
    plan = None
    if decoder is not None:
        from edgekd.deploy.tensorrt_decoder import decoder_plan

        plan = decoder_plan(cfg.model_dump(), decoder, inputs, out_dir, TIMES, write_input_files)
        input_files = {**plan.decode_files, **{f"{n} (prefill)": f for n, f in plan.prefill_files.items()}}
        build_argv = trtexec.build_command(MODEL, ENGINE, cfg.model_dump(), shape_ranges=plan.ranges, timing_cache=TIMING_CACHE)
        measure_argv = plan.decode_argv
    else:
        input_files = write_input_files(inputs, out_dir)
        build_argv = trtexec.build_command(MODEL, ENGINE, cfg.model_dump(), input_shapes=shapes, timing_cache=TIMING_CACHE)
        measure_argv = trtexec.bench_command(ENGINE, cfg.model_dump(), input_shapes=shapes, export_times=TIMES,
                                             input_files=input_files)
    atomic_copy(qdq_onnx, out_dir / MODEL)
    sha = {MODEL: sha256_file(out_dir / MODEL)}
    atomic_write_text(out_dir / SCRIPT, render_build_script(build_argv, cfg, target_name, sha[MODEL]))
    (out_dir / SCRIPT).chmod(0o755)
    atomic_copy(Path(trtexec.__file__), out_dir / HELPER)
    copy_feedgen(out_dir)
    copy_runner(out_dir)
    names = [SCRIPT, HELPER, FEEDGEN.name, RUNNER.name, RUNTIMES.name, *input_files.values()]
    sha.update({name: sha256_file(out_dir / name) for name in names})
    manifest = _manifest(cfg, target_name, inputs, dynamic, {"build": build_argv, "measure": measure_argv},
                         plan.decode_files if plan else input_files, sha)
    if plan is not None:
        manifest["decoder"] = plan.manifest()
    atomic_write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return [out_dir / name for name in (MODEL, *names, MANIFEST)]
