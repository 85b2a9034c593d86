"""Decoder engines on x86: optimum-onnx's KV-cache export (what edgekd builds) with edgekd's weight-only
and dynamic INT8 variants, against onnxruntime-genai's model builder (fp32, int4) on the same small
random Llama. Timed in one process, interleaved rounds, 1 intra-op thread: one decode step (1 new token
after PAST cached tokens) and a prefill of PROMPT tokens. Writes benchmarks/results/decoder_exporters.{json,md}.

onnxruntime-genai 0.18's builder is written for transformers 5 (it imports Qwen3.5 classes and reads
config.rope_scaling as a dict); with transformers 4.57 it runs only with placeholders for those names
(GENAI_SHIM) and an explicit default rope_scaling in config.json. Those are measurement workarounds
here, not something edgekd can ask a user to do, which is one reason the builder is not an edgekd
exporter (see the .md).

    python benchmarks/decoder_exporters.py [--rounds 5] [--runs 40]
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CONFIG = {"vocab_size": 2048, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 8,
          "num_key_value_heads": 4, "max_position_embeddings": 256}
PAST, PROMPT = 127, 64
GENAI_SHIM = """import runpy, sys, transformers
for name in ("Qwen3_5ForConditionalGeneration", "Qwen3_5MoeForConditionalGeneration"):
    transformers.__dict__.setdefault(name, type(name, (), {}))
sys.argv = ["builder", *sys.argv[1:]]
runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)
"""


def make_llama(folder: Path, config: dict = CONFIG) -> None:
    """A random Llama (seed 0) with a word-level tokenizer, saved as a transformers folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    llama = LlamaConfig(**config, rope_scaling={"rope_type": "default", "rope_theta": 10000.0})
    LlamaForCausalLM(llama).eval().save_pretrained(folder)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(config["vocab_size"])}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0").save_pretrained(folder)


def edgekd_variants(folder: Path, work: Path, config: dict = CONFIG) -> dict[str, Path]:
    """optimum's with-past export (edgekd.tasks.export) and edgekd's quantized variants of it."""
    from transformers import AutoModelForCausalLM

    from edgekd.config.target import TargetQuantize
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only
    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    fp32 = work / "optimum" / "model.onnx"
    export_hf(AutoModelForCausalLM.from_pretrained(folder).eval(), CausalLM(vocab_size=config["vocab_size"], max_length=PROMPT),
              fp32, 17, with_past=True)
    paths = {"optimum fp32": fp32}
    for name, setting in (("int4 b32", WeightOnly(4, 32)), ("int4 b32 acc4", WeightOnly(4, 32, accuracy_level=4)),
                          ("int8 b32", WeightOnly(8, 32))):
        paths[f"optimum + MatMulNBits {name}"] = work / f"{name.replace(' ', '_')}.onnx"
        quantize_weight_only(fp32, paths[f"optimum + MatMulNBits {name}"], setting)
    paths["optimum + dynamic int8"] = work / "dynamic.onnx"
    quantize_dynamic_int8(fp32, paths["optimum + dynamic int8"], TargetQuantize(per_channel=True))
    return paths


def genai_variants(folder: Path, work: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """onnxruntime-genai's builder (-e cpu) at fp32 and int4; failures recorded, not hidden."""
    shim = work / "genai_shim.py"
    shim.write_text(GENAI_SHIM)
    paths, failures = {}, {}
    for precision in ("fp32", "int4"):
        out = work / f"genai_{precision}"
        run = subprocess.run([sys.executable, str(shim), "-i", str(folder), "-o", str(out), "-p", precision, "-e", "cpu"],
                             capture_output=True, text=True, check=False)
        if run.returncode or not (out / "model.onnx").exists():
            failures[f"genai {precision}"] = (run.stderr.strip().splitlines() or ["no output"])[-1]
        else:
            paths[f"onnxruntime-genai builder {precision}"] = out / "model.onnx"
    return paths, failures


def feeds(session, length: int, past: int, rng: np.random.Generator, config: dict = CONFIG) -> dict[str, np.ndarray]:
    """input_ids [1, length], a mask over past + length, past key/values [1, kv_heads, past, head_dim]."""
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    feed = {}
    for arg in session.get_inputs():
        if arg.name == "input_ids":
            feed[arg.name] = rng.integers(0, config["vocab_size"], (1, length))
        elif arg.name == "attention_mask":
            feed[arg.name] = np.ones((1, past + length), np.int64)
        elif arg.name == "position_ids":
            feed[arg.name] = np.arange(past, past + length)[None]
        elif arg.name.startswith("past_key_values"):
            feed[arg.name] = rng.standard_normal((1, config["num_key_value_heads"], past, head_dim)).astype(np.float32)
        else:
            raise ValueError(f"unexpected input {arg.name}")
    return feed


def measure(paths: dict[str, Path], rounds: int, runs: int, config: dict = CONFIG, threads: int = 1) -> dict[str, dict[str, float]]:
    """Median over rounds of each round's p50 (ms), decode step and prefill, candidates shuffled per round."""
    import random

    import onnxruntime as ort

    from edgekd.perf.timing import time_runs

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = threads, 3
    sessions = {n: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for n, p in paths.items()}
    rng = np.random.default_rng(0)
    cases = {n: {"decode": feeds(s, 1, PAST, rng, config), "prefill": feeds(s, PROMPT, 0, rng, config)} for n, s in sessions.items()}
    samples = {n: {"decode": [], "prefill": []} for n in sessions}
    order, shuffler = list(sessions), random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            for case, feed in cases[name].items():
                run = functools.partial(sessions[name].run, None, feed)
                run()
                samples[name][case].append(float(np.percentile(time_runs(run, runs), 50)))
    return {n: {f"{case}_p50_ms": float(np.median(v)) for case, v in s.items()} for n, s in samples.items()}


def fidelity(paths: dict[str, Path]) -> dict[str, float]:
    """Max |logits - optimum fp32's| on one prefill of PROMPT tokens (same token ids)."""
    import onnxruntime as ort

    logits = {}
    for name, path in paths.items():
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits[name] = session.run(["logits"], feeds(session, PROMPT, 0, np.random.default_rng(7)))[0]
    reference = logits["optimum fp32"]
    return {n: float(np.abs(v - reference).max()) for n, v in logits.items()}


def main() -> None:
    from edgekd.common.toolchain import cpu_flags, cpu_model, versions

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_llama(work / "llama")
        paths = edgekd_variants(work / "llama", work)
        genai, failures = genai_variants(work / "llama", work)
        paths.update(genai)
        timings, diffs = measure(paths, args.rounds, args.runs), fidelity(paths)
        sizes = {n: sum(f.stat().st_size for f in p.parent.glob(p.name + "*")) / 1e6 for n, p in paths.items()}
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    result = {"host": {"cpu": cpu_model(), "flags": flags}, "versions": versions(("onnxruntime", "onnxruntime-genai", "optimum-onnx", "transformers")),
              "model": CONFIG, "past_tokens": PAST, "prompt_tokens": PROMPT, "rounds": args.rounds, "runs_per_round": args.runs,
              "threads": 1, "engines": {n: {**timings[n], "max_abs_logit_diff_vs_optimum_fp32": diffs[n], "size_mb": sizes[n]} for n in paths},
              "failures": failures}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoder_exporters.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
