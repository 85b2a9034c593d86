"""Which Hugging Face decoder families `edgekd compile --target x86` builds, and what its x86 tuner does
with each: a tiny random-weight model per family (2 layers, hidden 64 (128 for Phi, 256 for StableLM: a
rotary dimension of 16, as their published sizes have), vocabulary 256, 64 positions),
exported the way edgekd exports (optimum-onnx, text-generation-with-past; its config.json beside the
ONNX file, as optimum-cli writes it: edgekd compile reads the declared positions and the attention
form from it), compiled with a fast
profile (--shape input_ids=1x32). Per family: the exit code, whether the GroupQueryAttention fusion
was used (or the tuning record's reason it was not), whether the logits_to_keep input was added, the
chosen candidate, the prompt tokens the bench ran. Coverage, not speed: the timings of these tiny
models mean nothing. Writes benchmarks/results/decoder_coverage.{json,md}.

    python benchmarks/decoder_coverage.py [--families qwen2,phi3] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
V = 256
_COMMON = {"vocab_size": V, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "max_position_embeddings": 64}
_KV = {**_COMMON, "num_key_value_heads": 2}
FAMILIES = {  # name: (config class, model class, config arguments)
    "llama": ("LlamaConfig", "LlamaForCausalLM", {**_KV, "tie_word_embeddings": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", _KV),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _KV),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**_KV, "head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**_KV, "num_key_value_heads": 1, "head_dim": 16}),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", _KV),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {**_KV, "attention_multiplier": 0.05, "logits_scaling": 4.0}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {**_KV, "pad_token_id": 0}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {**_KV, "hidden_size": 256}),  # a quarter rotary: 16 of 64
    "phi": ("PhiConfig", "PhiForCausalLM", {**_COMMON, "hidden_size": 128}),  # half rotary: 16 of 32
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**_KV, "pad_token_id": 0}),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {**_COMMON, "hidden_size": 256, "rotary_pct": 0.25}),  # Pythia's: 16 of 64
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {"vocab_size": V, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "rotary_dim": 8}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {"vocab_size": V, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64}),
    "opt": ("OPTConfig", "OPTForCausalLM", {"vocab_size": V, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
                                            "num_attention_heads": 4, "max_position_embeddings": 64, "word_embed_proj_dim": 64}),
    "bloom": ("BloomConfig", "BloomForCausalLM", {"vocab_size": V, "hidden_size": 64, "n_layer": 2, "n_head": 4}),
    "falcon": ("FalconConfig", "FalconForCausalLM", {"vocab_size": V, "hidden_size": 64, "num_hidden_layers": 2,
                                                     "num_attention_heads": 4, "new_decoder_architecture": False, "multi_query": True}),
}
PROFILE = """[recipe]  # a short bench and tuning: coverage, not timings
bench = { warmup_runs = 3, min_runs = 10, max_runs = 40, max_seconds = 0.5, offline_max_batch = 2, offline_seconds = 0.05, profile_runs = 2, compare = false }
tune = { rounds = 1, runs_per_round = 5, warmup_runs = 2 }

[budgets]
quantize_perplexity_increase_pct = 3.0
"""


def export(family: str, path: Path) -> str | None:
    """Export the family's tiny model to `path`; None, or why it did not export."""
    import torch
    import transformers

    from edgekd.tasks import CausalLM
    from edgekd.tasks.export import export_hf

    config, cls, args = FAMILIES[family]
    torch.manual_seed(0)
    model = getattr(transformers, cls)(getattr(transformers, config)(**args)).eval()
    with torch.no_grad():  # random biases and norm weights: at zeros and ones torch.onnx shares one constant
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.normal_(1.0 if "norm" in name and param.dim() == 1 else 0.0, 0.3)
    try:
        export_hf(model, CausalLM(vocab_size=V, max_length=16), path, 17, with_past=True)
    except Exception as exc:  # noqa: BLE001 - recorded in the results
        return str(exc).splitlines()[0][:300]
    model.config.save_pretrained(path.parent)  # config.json beside the export, as optimum-cli writes it: edgekd compile reads it
    return None


def compile_one(model: Path, profile: Path, out: Path) -> dict:
    run = subprocess.run([sys.executable, "-m", "edgekd.cli.main", "compile", str(model), "--target", "x86", "--profile", str(profile),
                          "--shape", "input_ids=1x32", "--shape", "attention_mask=1x32", "--out", str(out)],
                         capture_output=True, text=True, check=False)
    row: dict = {"exit_code": run.returncode}
    if run.returncode != 0:
        row["error"] = (run.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
        return row
    tuning = json.loads((out / "engine.json").read_text())["tuning"]
    notes = tuning["left_out"]
    row["chosen"] = tuning["rows"][tuning["chosen"]]["variant"]
    row["gqa"] = next((n.split(": ", 1)[1] for n in notes if n.startswith("GroupQueryAttention fusion not used")), "fused")
    row["logits_to_keep"] = next((n.split(": ", 1)[1] for n in notes if n.startswith("logits_to_keep not added")), "added")
    bench = json.loads((out / "report.json").read_text())
    ttft = next((m for s in bench["stages"] for k, m in s["metrics"].items() if k == "latency.ttft_p90_ms"), None)
    row["ttft_how"] = ttft["how"] if ttft else "no TTFT metric"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgekd-coverage-"))
    profile = work / "profile.toml"
    profile.parent.mkdir(parents=True, exist_ok=True)
    profile.write_text(PROFILE)
    rows = {}
    for family in args.families.split(","):
        model = work / family / "model.onnx"
        failed = export(family, model)
        rows[family] = {"export": failed or "ok", **({} if failed else compile_one(model, profile, work / family / "build"))}
        print(family, json.dumps(rows[family])[:300], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "decoder_coverage.json").write_text(json.dumps({"families": rows, "config": FAMILIES, "commit": commit}, indent=1))
    (RESULTS / "decoder_coverage.md").write_text(report(rows, commit))


def report(rows: dict, commit: str) -> str:
    lines = ["# Decoder families through `edgekd compile --target x86` (benchmarks/decoder_coverage.py)", "",
             f"edgekd at {commit} (git HEAD when run; uncommitted changes not recorded).", "",
             "Tiny random-weight models (2 layers, hidden 64; Phi 128, StableLM and GPT-NeoX 256): coverage, not speed. 'fused': the attention became "
             "GroupQueryAttention and the fused graph matched the export on a prompt and a decode step; otherwise the "
             "tuning record's reason. The tuner then measured every candidate it could make.", "",
             "| family | exit | GroupQueryAttention | logits_to_keep | chosen candidate |", "|---|---|---|---|---|"]
    for family, row in rows.items():
        if row["export"] != "ok" or row.get("exit_code"):
            lines.append(f"| {family} | {row.get('exit_code', 'export failed')} | {row.get('error', row['export'])} | | |")
            continue
        lines.append(f"| {family} | 0 | {row['gqa']} | {row['logits_to_keep']} | {row['chosen']} |")
    shortened = [f for f, r in rows.items() if "shortened" in r.get("ttft_how", "")]
    lines += ["", f"Prompt shortened by the bench (the model's positions): {', '.join(shortened) or 'none'}."]
    lines += [f"- {f}: {rows[f]['ttft_how'].split('shortened: ', 1)[1].split(' of them for decoding')[0]} of them for decoding"
              for f in shortened]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
