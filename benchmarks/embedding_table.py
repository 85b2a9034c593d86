"""What quantizing the token embedding table is worth for a small decoder (the x86 targets' `embedding =
true` weight-only candidate, edgekd.graph.weight_only): engine size, session memory, decode step and
prompt pass, and how far the logits move.

A Llama at the SmolLM-135M shape with its tied head (benchmarks/decoder_families.py's SHAPE; random
weights, biases and norm weights), exported the way edgekd exports, given logits_to_keep (the head
untied: its own initializer), GroupQueryAttention-fused with the caches cut to its 2048 positions, then
INT4 weight-only (MatMulNBits, blocks of 128, accuracy level 4) with the table fp32 ("int4") and with the
table 4-bit too ("int4-emb4"). Measured: file size; the resident memory of a fresh process with
the session open (VmRSS, /proc/self/status; the median of 3 processes); one decode step after 128 cached tokens and a 128-token prompt pass
fed logits_to_keep 1, in interleaved rounds (decoder_families.time_rounds, 2 threads); and on a 64-token
prompt the logits' KL divergence from the fp32 export and their top-1 agreement with it (random
weights: the gap between the two rows, not their level, is what carries over). Writes
benchmarks/results/embedding_table.{json,md}.

    python benchmarks/embedding_table.py [--rounds 5] [--runs 30]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import decoder_families as families

RESULTS = Path(__file__).parent / "results"
RSS = ("import onnxruntime as ort, sys; session = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider']); "
       "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmRSS')))")  # Linux


def graphs(work: Path) -> tuple[Path, dict[str, Path]]:
    """(the fp32 export, {"int4": ..., "int4-emb4": ...})."""
    from edgekd.graph.gqa_fusion import fuse_gqa
    from edgekd.graph.logits_to_keep import add_logits_to_keep
    from edgekd.graph.weight_only import WeightOnly, quantize_weight_only

    families.FAMILIES["llama"] = ("LlamaConfig", "LlamaForCausalLM", {})
    source = families.export("llama", work)
    add_logits_to_keep(source, work / "keep.onnx")
    fuse_gqa(work / "keep.onnx", work / "fused.onnx", positions=families.SHAPE["max_position_embeddings"])
    out = {"int4": work / "int4.onnx", "int4-emb4": work / "int4_emb4.onnx"}
    for name, path in out.items():
        quantize_weight_only(work / "fused.onnx", path, WeightOnly(4, 128, True, 4, embedding=name.endswith("emb4")))
    return source, out


def closeness(reference: Path, models: dict[str, Path]) -> dict[str, dict[str, float]]:
    """Per model: mean KL(fp32 || model) of the next-token distributions and top-1 agreement on a 64-token prompt."""
    import onnxruntime as ort

    from edgekd.graph.decoder import complete_feeds

    prompt = np.random.default_rng(0).integers(0, families.SHAPE["vocab_size"], (1, 64), dtype=np.int64)

    def logits(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = complete_feeds(session, {"input_ids": prompt, "attention_mask": np.ones_like(prompt)})
        feed.pop("logits_to_keep", None)  # every position's logits
        out = session.run(["logits"], feed)[0][0].astype(np.float64)
        out -= out.max(-1, keepdims=True)
        return out - np.log(np.exp(out).sum(-1, keepdims=True))

    ref = logits(reference)
    rows = {}
    for name, path in models.items():
        got = logits(path)
        rows[name] = {"kl": float((np.exp(ref) * (ref - got)).sum(-1).mean()), "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean())}
    return rows


def rss_mb(model: Path, processes: int = 3) -> float:
    """The median over `processes` fresh processes of the resident memory once the session is open
    (it varies by ~10 % between processes: ONNX Runtime's arena)."""
    runs = [int(subprocess.run([sys.executable, "-c", RSS, str(model)], capture_output=True, text=True, check=True).stdout)
            for _ in range(processes)]
    return float(np.median(runs)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekd-embedding-"))
    source, models = graphs(work)
    rows = {name: {"size_mb": path.stat().st_size / 1e6, "rss_mb": rss_mb(path)} for name, path in models.items()}
    samples = families.time_rounds({"int4-export": models["int4"], "int4-emb4": models["int4-emb4"]}, args.rounds, args.runs)
    for key, name in (("int4-export", "int4"), ("int4-emb4", "int4-emb4")):
        rows[name] |= {f"{phase}_{q}_ms": float(np.percentile(v, int(q[1:]))) for phase, v in samples[key].items() for q in ("p50", "p90")}
    for name, numbers in closeness(source, models).items():
        rows[name] |= numbers
    result = {**families.host(), "measured": time.strftime("%Y-%m-%d %H:%M"), "shape": families.SHAPE, "rounds": args.rounds,
              "runs": args.runs, "threads": 2, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedding_table.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "embedding_table.md").write_text(report(result))
    print(json.dumps(rows, indent=1))


def report(result: dict) -> str:
    lines = ["# The token embedding table 4-bit (benchmarks/embedding_table.py)", "",
             f"{families.host_line(result)}; measured {result['measured']}; a Llama at the "
             f"SmolLM-135M shape ({result['shape']['num_hidden_layers']} layers, hidden {result['shape']['hidden_size']}, vocabulary "
             f"{result['shape']['vocab_size']}, tied head), random weights, GroupQueryAttention-fused, INT4 weight-only blocks of 128 "
             f"(accuracy level 4); {result['rounds']} interleaved rounds, {result['threads']} threads. Decode: 1 token after 128 cached; "
             "prompt: 128 tokens fed logits_to_keep 1. KL and top-1 agreement against the fp32 export on a 64-token prompt.", "",
             "| graph | file MB | session RSS MB | decode p50 / p90 ms | prompt p50 / p90 ms | KL from fp32 | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | {r['size_mb']:.1f} | {r['rss_mb']:.0f} | {r['decode_p50_ms']:.2f} / {r['decode_p90_ms']:.2f} | "
                     f"{r['prompt_p50_ms']:.1f} / {r['prompt_p90_ms']:.1f} | {r['kl']:.4f} | {r['top1_agreement']:.3f} |")
    lines += ["", "'int4': the table fp32 (what the INT4 candidates keep); 'int4-emb4': the table 4-bit symmetric in blocks of 128 "
              "along the hidden axis (com.microsoft.GatherBlockQuantized), the x86 targets' `embedding = true` candidate. A decode "
              "step reads one row of the table, so what changes is the size and the memory, not the time."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
