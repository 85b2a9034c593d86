"""What the decoder tuner saves by timing a candidate's prompt pass on the sessions its decode step
was timed on (edgekd.backends.ort.prune.run_phases) instead of in a second worker run that opens every
session again (before this change: screening and the full rounds each ran the worker twice).

The candidates: a SmolLM-135M-shaped Llama with its tied head (benchmarks/peers_real_prep's
decoder_tied export, optimum, random weights), its dynamic INT8 and INT4 (block 128) weight-only
variants, each at 1 and 2 threads x graph optimization 'extended' and 'all' (12 candidates, as the
tuner pairs them). Both ways time the same schedule as screening does (decode step: 1 round of 20
runs after 5 warm-up runs; prompt pass of 128 tokens: 1 round of 2 runs after 1 warm-up run) through
the real timing worker, alternated for `--repeats` pairs; the worker's wall time (process start to
exit: sessions opened, warm-up and timed runs) is what is compared, as a ratio per pair.

    python benchmarks/tune_sessions.py --model /tmp/pw/llama-tied-optimum/model.onnx [--repeats 3]

Writes benchmarks/results/tune_sessions.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.toolchain import host_info

RESULTS = Path(__file__).parent / "results"
PROMPT, STEP_RUNS, STEP_WARMUP = 128, 20, 5


def _variants(fp32: Path, out: Path) -> dict[str, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    import onnx

    int8, int4 = out / "int8_dynamic.onnx", out / "int4_b128.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=128, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    quantizer.model.save_model_to_file(str(int4), use_external_data_format=False)
    return {"fp32": fp32, "int8-dynamic": int8, "int4-b128": int4}


def _feeds(fp32: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the decode step after PROMPT cached tokens, the prompt pass of PROMPT tokens with an empty past)."""
    from edgekd.backends.ort.session import open_session
    from edgekd.graph.decoder import complete_feeds

    session = open_session(fp32)
    ids = np.random.default_rng(0).integers(0, 49152, (1, PROMPT), dtype=np.int64)
    prompt = complete_feeds(session, {"input_ids": ids, "attention_mask": np.ones((1, PROMPT), np.int64)})
    prompt = {k: v for k, v in prompt.items() if k in {i.name for i in session.get_inputs()}}
    if "position_ids" in {i.name for i in session.get_inputs()}:
        prompt["position_ids"] = np.arange(PROMPT, dtype=np.int64)[None]
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, prompt)))
    step = {"input_ids": np.array([[7]], np.int64), "attention_mask": np.ones((1, PROMPT + 1), np.int64),
            **{n.replace("present", "past_key_values"): v for n, v in out.items() if n.startswith("present")}}
    if "position_ids" in prompt:
        step["position_ids"] = np.array([[PROMPT]], np.int64)
    return step, prompt


def _entries(models: dict[str, Path]) -> list[dict[str, Any]]:
    from edgekd.config.target import SessionConfig

    return [{"model": str(path), "session": SessionConfig(intra_op_num_threads=t, graph_optimization_level=level).model_dump()}
            for path in models.values() for t in (1, 2) for level in ("extended", "all")]


def _pair(entries: list[dict[str, Any]], step: dict, prompt: dict, out: Path) -> dict[str, float]:
    from edgekd.backends.ort.prune import run_phases, run_rounds

    _, first = run_rounds(entries, (1, STEP_RUNS, STEP_WARMUP), step, out, "decode step")
    _, second = run_rounds(entries, (1, 2, 1), prompt, out, "prompt pass")
    _, merged = run_phases(entries, [(step, (1, STEP_RUNS, STEP_WARMUP)), (prompt, (1, 2, 1))], out, "both")
    return {"two_runs_s": first + second, "one_run_s": merged, "ratio": merged / (first + second)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the decoder_tied optimum export (model.onnx with past key/values)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="tune_sessions")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="edgekd-tune-sessions-") as tmp:
        out = Path(tmp)
        models = _variants(args.model, out)
        step, prompt = _feeds(args.model)
        entries = _entries(models)
        load_before = os.getloadavg()[0]
        pairs = [_pair(entries, step, prompt, out / "work") for _ in range(args.repeats)]
        load_after = os.getloadavg()[0]
    ratios = [p["ratio"] for p in pairs]
    result = {"edgekd_commit": commit, "host": host_info(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "candidates": [f"{Path(e['model']).stem}, {e['session']['intra_op_num_threads']} thread(s), {e['session']['graph_optimization_level']}"
                             for e in entries],
              "load_avg_1min_before_after": [load_before, load_after], "pairs": pairs,
              "median_ratio": float(np.median(ratios)), "how": __doc__.split("\n\n")[1].replace("\n", " ")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# One worker run for a decoder candidate's decode step and prompt pass ({args.name})", "",
          f"edgekd at {commit}; host {result['host'].get('cpu')}, load (1 min) {load_before:.2f} before, {load_after:.2f} after.", "",
          result["how"], "", f"{len(entries)} candidates: {'; '.join(result['candidates'])}.", "",
          "| pair | two worker runs (before) | one worker run (after) | after / before |", "|---|---|---|---|"]
    md += [f"| {i + 1} | {p['two_runs_s']:.1f} s | {p['one_run_s']:.1f} s | {p['ratio']:.2f} |" for i, p in enumerate(pairs)]
    md += ["", f"Median ratio: **{result['median_ratio']:.2f}**."]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
