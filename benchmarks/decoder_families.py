"""What edgekd's GroupQueryAttention fusion and its untied head are worth for decoder families beyond Llama: Qwen2 (Q/K/V
biases), Qwen3 (per-head q/k RMSNorm), Granite (its own attention scale), Phi-3 (a packed QKV MatMul,
sliced rotary), StableLM (partial rotary), GPT-2 and OPT (no rotary: learned positions; GPT-2's QKV
one Conv1D split, OPT's queries scaled before the heads; both multi-head, every head keyed) and
GPT-NeoX (Pythia: QKV packed per head, a quarter of each head rotary, multi-head), which
edgekd left unfused until it learnt their forms (edgekd/graph/gqa_fusion.py, gqa_inputs.py). Families measured in an earlier invocation stay in the
results (each row says when it was measured; every row's graphs are timed against each other only).

Each family at the SmolLM-135M shape (hidden 576, 30 layers, 9 heads, 3 key/value heads, vocabulary
49152, tied head), random weights with random biases and norm weights, exported the way edgekd exports
(optimum-onnx, text-generation-with-past), given the logits_to_keep input (edgekd.graph.logits_to_keep)
and quantized with the x86 tuner's two decoder recipes: INT4 weight-only (MatMulNBits, blocks of 128,
accuracy level 4) for the decode step and dynamic INT8 for the prompt pass, each from: the export as it
is, its head tied to the embedding so the quantizers leave it fp32 (what edgekd built before);
the fused graph, head still tied ("fused-tied"); the fused graph with the head's weight stored as its
own initializer, so quantized too ("fused": what edgekd builds now; edgekd.graph.logits_to_keep). Timed in one process, 2 intra-op threads,
interleaved rounds: one decode step (1 new token after PAST cached tokens) and a PROMPT-token prompt
pass fed logits_to_keep 1. The fused graph's outputs are checked against the export's first
(edgekd.graph.graph_edit.verify). Writes benchmarks/results/decoder_families.{json,md}.

    python benchmarks/decoder_families.py [--rounds 5] [--runs 30] [--families qwen2,qwen3,granite]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SHAPE = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
         "num_key_value_heads": 3, "max_position_embeddings": 2048, "tie_word_embeddings": True}
FAMILIES = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
            "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 64}),
            "granite": ("GraniteConfig", "GraniteForCausalLM", {"attention_multiplier": 0.015625, "logits_scaling": 8.0}),
            "phi3": ("Phi3Config", "Phi3ForCausalLM", {"pad_token_id": 0}),
            "stablelm": ("StableLmConfig", "StableLmForCausalLM", {}),
            "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"n_inner": 1536}),  # no rotary, all 9 heads keyed (MHA), packed QKV
            "opt": ("OPTConfig", "OPTForCausalLM", {"ffn_dim": 1536, "word_embed_proj_dim": 576}),  # no rotary, MHA, queries pre-scaled
            "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"rotary_pct": 0.25})}  # QKV packed per head, a quarter rotary, MHA
PAST, PROMPT = 128, 128


def export(family: str, work: Path) -> Path:
    import torch
    import transformers

    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    config, cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, config)(**SHAPE, **extra)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(1.0 if "norm" in name else 0.0, 0.1)
    path = work / family / "model.onnx"
    export_hf(model, CausalLM(vocab_size=SHAPE["vocab_size"], max_length=64), path, 17, with_past=True)
    return path


def variants(source: Path) -> tuple[dict[str, Path], float, str]:
    """The six graphs (INT4 and INT8 of: the export with its tied head; fused, the head still tied; fused,
the head untied), the fused graph's largest relative output difference, and the fusion's description."""
    from edgekd.config.target import TargetQuantize
    from edgekd.graph.gqa_fusion import fuse_gqa
    from edgekd.graph.graph_edit import verify
    from edgekd.graph.logits_to_keep import add_logits_to_keep
    from edgekd.graph.quantize import quantize_dynamic_int8
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    folder = source.parent
    tied, keep, fused_tied, fused = folder / "tied.onnx", folder / "keep.onnx", folder / "fused_tied.onnx", folder / "fused.onnx"
    add_logits_to_keep(source, tied, untie=False)  # the head as exported: tied to the embedding, so left fp32 by the quantizers
    add_logits_to_keep(source, keep)
    fuse_gqa(tied, fused_tied)
    fusion = fuse_gqa(keep, fused)
    ids = np.random.default_rng(0).integers(0, SHAPE["vocab_size"], (1, 16), dtype=np.int64)
    gap = verify(source, fused, [{"input_ids": ids, "attention_mask": np.ones_like(ids)}])
    out = {}
    for name, graph in (("export", tied), ("fused-tied", fused_tied), ("fused", fused)):
        out[f"int4-{name}"], out[f"int8-{name}"] = folder / f"int4_{name}.onnx", folder / f"int8_{name}.onnx"
        quantize_weight_only(graph, out[f"int4-{name}"], WeightOnly(4, 128, True, 4))
        quantize_dynamic_int8(graph, out[f"int8-{name}"], TargetQuantize(), op_types=("MatMul", "Gemm"))
    return out, gap, fusion.describe()


def feeds(session) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:  # noqa: ANN001 - an ORT session
    """(decode step after PAST cached tokens, PROMPT-token prompt pass fed logits_to_keep 1)."""
    from edgekd.graph.decoder import complete_feeds

    rng = np.random.default_rng(1)
    prompt = rng.integers(0, SHAPE["vocab_size"], (1, PROMPT), dtype=np.int64)
    first = complete_feeds(session, {"input_ids": prompt, "attention_mask": np.ones_like(prompt)})
    names = [o.name for o in session.get_outputs()]
    presents = dict(zip(names, session.run(None, first)))
    step = {"input_ids": prompt[:, -1:], "attention_mask": np.ones((1, PAST + 1), np.int64),
            **{n.replace("present", "past_key_values"): v[:, :, :PAST] for n, v in presents.items() if n.startswith("present")}}
    return step, {**first, "logits_to_keep": np.ones(1, np.int64)}


def time_rounds(models: dict[str, Path], rounds: int, runs: int) -> dict[str, dict[str, list[float]]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 2, 1, 3
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for k, p in models.items()}
    step, prompt = feeds(sessions["int4-export"])
    samples: dict[str, dict[str, list[float]]] = {k: {"decode": [], "prompt": []} for k in models}
    for _ in range(rounds):
        for key, session in sessions.items():
            for phase, feed, count in (("decode", step, runs), ("prompt", prompt, max(3, runs // 5))):
                session.run(None, feed)
                for _ in range(count):
                    start = time.perf_counter()
                    session.run(None, feed)
                    samples[key][phase].append((time.perf_counter() - start) * 1e3)
    return samples


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekd-families-"))
    done = RESULTS / "decoder_families.json"  # families measured before (another invocation) are kept, said per row
    rows = [r for r in json.loads(done.read_text())["families"] if r["family"] not in args.families.split(",")] if done.exists() else []
    for family in args.families.split(","):
        models, gap, fusion = variants(export(family, work))
        samples = time_rounds(models, args.rounds, args.runs)
        stats = {k: {ph: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
                     for ph, v in by_phase.items()} for k, by_phase in samples.items()}
        rows.append({"family": family, "fused_max_rel_diff": gap, "fusion": fusion, "stats": stats, "measured": time.strftime("%Y-%m-%d %H:%M")})
        print(family, json.dumps({k: {ph: round(s["p50_ms"], 2) for ph, s in v.items()} for k, v in stats.items()}), flush=True)
    result = {**host(), "shape": SHAPE, "past": PAST, "prompt": PROMPT,
              "rounds": args.rounds, "runs": args.runs, "threads": 2, "families": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoder_families.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "decoder_families.md").write_text(report(result))


def host() -> dict:
    """The host and the versions every decoder benchmark's result records."""
    from edgekd.common.toolchain import cpu_flags, cpu_model, versions

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return {"host": {"cpu": cpu_model(), "flags": flags, "platform": platform.platform()},
            "versions": versions(("onnxruntime", "optimum-onnx", "transformers"))}


def host_line(result: dict) -> str:
    """"Host: CPU (its VNNI/AMX/AVX2 flags); versions" of a result `host()` made."""
    cpu = result["host"]
    return (f"Host: {cpu['cpu']} ({', '.join(f for f in cpu['flags'] if 'vnni' in f or 'amx' in f or f == 'avx2')}); "
            f"{', '.join(f'{k} {v}' for k, v in result['versions'].items())}")


def report(result: dict) -> str:
    lines = ["# GroupQueryAttention fusion and the untied head for decoder families beyond Llama (benchmarks/decoder_families.py)", "",
             f"{host_line(result)}; {result['threads']} intra-op threads; random weights at the SmolLM-135M shape "
             f"({result['shape']['num_hidden_layers']} layers, hidden {result['shape']['hidden_size']}); {result['rounds']} interleaved "
             f"rounds of {result['runs']} decode steps (1 token after {result['past']} cached) and {max(3, result['runs'] // 5)} prompt "
             f"passes ({result['prompt']} tokens, logits_to_keep 1) per graph. p50 / p90 ms, pooled over rounds.", "",
             "| family | graph | decode step p50 / p90 | prompt pass p50 / p90 | / export (p50) |", "|---|---|---|---|---|"]
    for row in result["families"]:
        s = row["stats"]
        for precision, phase in (("int4", "decode"), ("int8", "prompt")):
            for graph in [g for g in ("export", "fused-tied", "fused") if f"{precision}-{g}" in s]:
                cell = s[f"{precision}-{graph}"]
                ratio = s[f"{precision}-{graph}"][phase]["p50_ms"] / s[f"{precision}-export"][phase]["p50_ms"]
                lines.append(f"| {row['family']} | {precision} {graph} | {cell['decode']['p50_ms']:.2f} / {cell['decode']['p90_ms']:.2f} | "
                             f"{cell['prompt']['p50_ms']:.1f} / {cell['prompt']['p90_ms']:.1f} | "
                             f"{f'{ratio:.2f} ({phase})' if graph != 'export' else ''} |")
    lines += ["", "INT4 is the decode step's recipe, dynamic INT8 the prompt pass's (the x86 tuner's prompt/decode split puts "
              "them in one engine); the ratio column compares the phase each recipe serves. 'export': the export as edgekd "
              "built it before (unfused; the head, tied to the embedding, left fp32 by the quantizers); 'fused-tied': "
              "GroupQueryAttention fused, head still fp32; 'fused': fused and the head quantized (what edgekd builds now).", ""]
    lines += [f"- {row['family']} (measured {row.get('measured', '?')}): fused graph's outputs within {row['fused_max_rel_diff']:.1e} (relative) of the export's on a "
              f"16-token prompt and a decode step; {row['fusion']}" for row in result["families"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
