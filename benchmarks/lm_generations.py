"""Model collapse, measured: copies of copies of a small LM on the Python docs' prose.

Generation 0 is the Llama teacher of benchmarks/distill_lm.py (trained on the real train pages by an
edgekd build). Generation g >= 1 is a student (the same small Llama config every generation, random
init) trained by `edgekd build` with sequence-level KD ([distill] data = "teacher_generations")
on TRAIN_PROMPTS continuations sampled from generation g - 1 (temperature 1, the same prompts every
generation) only (`real_fraction` 0), or, as the mitigation, with a share of real train blocks
mixed in (`real_fraction` > 0). Each student is saved as a transformers
folder whose model.safetensors keeps the build's provenance (so the next build's lineage reads its
generation) and teaches the next generation.

Per generation: the perplexity on the real held-out test pages (the build's torch metric), and the
diversity of its own samples: distinct-2 (distinct token bigrams / all bigrams) and self-BLEU-2
(mean BLEU-2 of each sample against the others; higher = more alike) over SAMPLES continuations
(temperature 1) of the first PROMPT tokens of test blocks. Writes
benchmarks/results/lm_generations.{json,md}; model cards of generation >= 2 students cite the JSON.

    python benchmarks/lm_generations.py [--generations N] [--real-fractions 0,0.25] [--workdir DIR]

Needs `apt-get install python3.11-doc`.
"""
from __future__ import annotations

import argparse
import collections
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from edgekd.common.fsutil import atomic_write_text
from edgekd.common.toolchain import host_info, versions

import lm_common
from lm_common import (
    BATCH,
    LR,
    RESULTS,
    STUDENT,
    WARMUP,
    build,
    data_table,
    llama_table,
    metrics_of,
)

STEM = "lm_generations"
PROMPT, NEW_TOKENS, SAMPLES = 16, 48, 200
TRAIN_PROMPTS = 800  # each generation trains on this many sampled continuations (+ real blocks with real_fraction)
DEFAULT = {"generations": 3, "real_fractions": "0,0.25", "epochs": 2, "teacher_epochs": 2, "max_chars": 1_500_000}


def prompts_file(work: Path) -> Path:
    """The first TRAIN_PROMPTS train paragraphs of at least 24 words, one a line: each generation's
    prompts (their first PROMPT tokens), the same for every generation."""
    path = work / "gen_prompts.txt"
    lines = [line for line in (work / "data" / "train.txt").read_text(encoding="utf-8").splitlines() if len(line.split()) >= 24]
    path.write_text("".join(line + "\n" for line in lines[:TRAIN_PROMPTS]), encoding="utf-8")
    return path


def project_toml(parent: Path, prompts: Path, real_fraction: float, generation: int, epochs: int) -> str:
    return f'''name = "pydocs-gen{generation}-real{real_fraction:g}"
[teacher.hf]
path = "{parent}"
[student.hf]
model_type = "llama"
{llama_table(STUDENT)}{data_table()}[distill]
losses = [{{ name = "ce" }}]
data = "teacher_generations"
epochs = {epochs}
lr = {LR}
warmup_ratio = {WARMUP}
batch_size = {BATCH}
seed = 0
[distill.generate]
prompt_tokens = {PROMPT}
prompts = "{prompts}"
max_new_tokens = {lm_common.MAX_LENGTH - PROMPT}
strategy = "sample"
temperature = 1.0
seed = {generation}
real_fraction = {real_fraction}
'''


def student_folder(build_dir: Path, folder: Path) -> Path:
    """The build's student as a transformers folder; model.safetensors keeps student.safetensors'
    header (edgekd's provenance, with the generation), the tokenizer is the data's."""
    from edgekd.distill.weights import load_weights, read_metadata
    from edgekd.examples import pydocs
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(build_dir / "tokenizer"), local_files_only=True)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), max_position_embeddings=lm_common.MAX_LENGTH, tie_word_embeddings=True,
                                         bos_token_id=pydocs.END_OF_TEXT_ID, eos_token_id=pydocs.END_OF_TEXT_ID,
                                         pad_token_id=pydocs.END_OF_TEXT_ID, **vars(STUDENT)))
    load_weights(model, build_dir / "student.safetensors", "student")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    weights = tmp / "model.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", **read_metadata(build_dir / "student.safetensors")})
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def samples(folder: Path, data: Path, seed: int) -> list[list[int]]:
    """SAMPLES continuations (temperature 1, NEW_TOKENS tokens) of the first PROMPT tokens of the test split's blocks."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(data / "tokenizer"), local_files_only=True)
    ids = tok((data / "test.txt").read_text(encoding="utf-8"))["input_ids"]
    prompts = [ids[i:i + PROMPT] for i in range(0, len(ids) - PROMPT, lm_common.MAX_LENGTH)][:SAMPLES]
    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    torch.manual_seed(seed)
    out: list[list[int]] = []
    with torch.no_grad():
        for start in range(0, len(prompts), 50):
            batch = torch.tensor(prompts[start:start + 50])
            gen = model.generate(batch, attention_mask=torch.ones_like(batch), do_sample=True, temperature=1.0, top_k=0,
                                 max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=tok.pad_token_id)
            out += [row[PROMPT:].tolist() for row in gen]
    return out


def distinct_n(texts: list[list[int]], n: int = 2) -> float:
    grams = [tuple(t[i:i + n]) for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def _grams(tokens: list[int], n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def self_bleu2(texts: list[list[int]]) -> float:
    """Mean BLEU-2 of each text against all the others as references: the geometric mean of its
    clipped unigram and bigram precisions (the counts clipped at the most any other text has; all
    texts are NEW_TOKENS long, so no brevity penalty)."""
    counts = [(_grams(t, 1), _grams(t, 2)) for t in texts]
    scores = []
    for i, own in enumerate(counts):
        logs = []
        for n in range(2):
            ref: collections.Counter = collections.Counter()
            for j, other in enumerate(counts):
                if j != i:
                    ref |= other[n]
            hits = sum(min(c, ref[g]) for g, c in own[n].items())
            logs.append(math.log(max(hits, 1e-9) / max(1, sum(own[n].values()))))
        scores.append(math.exp(sum(logs) / 2))
    return sum(scores) / max(1, len(scores))


def row(generation: int, real_fraction: float, perplexity: float | None, folder: Path, data: Path) -> dict:
    texts = samples(folder, data, seed=generation)
    return {"generation": generation, "real_fraction": real_fraction, "perplexity": perplexity,
            "distinct_2": distinct_n(texts), "self_bleu_2": self_bleu2(texts), "samples": len(texts), "model": folder.name}


def write(result: dict, final: bool) -> None:
    lm_common.write_json(RESULTS / f"{STEM}.json", result)
    lines = ["# Model collapse: copies of copies of a small LM (Python docs' prose)", "", result["what"], "",
             "| real fraction | generation | perplexity on real test text | distinct-2 | self-BLEU-2 |", "|---|---|---|---|---|"]
    for r in result["generations"]:
        ppl = "n/a" if r["perplexity"] is None else f"{r['perplexity']:.2f}"
        lines.append(f"| {r['real_fraction']:g} | {r['generation']} | {ppl} | {r['distinct_2']:.3f} | {r['self_bleu_2']:.3f} |")
    lines += ["", "How: " + result["how"]]
    atomic_write_text(RESULTS / f"{STEM}.md", "\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stdout if final else sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generations", type=int, default=DEFAULT["generations"])
    parser.add_argument("--real-fractions", default=DEFAULT["real_fractions"])
    parser.add_argument("--epochs", type=int, default=DEFAULT["epochs"])
    parser.add_argument("--teacher-epochs", type=int, default=DEFAULT["teacher_epochs"])
    parser.add_argument("--max-chars", type=int, default=DEFAULT["max_chars"])
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    load_before, start = os.getloadavg()[0], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-gen-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        data = lm_common.prepare_data(work, args.max_chars)
        teacher = lm_common.train_teacher(work, args.teacher_epochs)
        prompts = prompts_file(work)
        rows: list[dict] = []
        for fraction in (float(f) for f in args.real_fractions.split(",")):
            parent = teacher
            for generation in range(1, args.generations + 1):
                project = data / f"gen{generation}-real{fraction:g}.toml"
                project.write_text(project_toml(parent, prompts, fraction, generation, args.epochs))
                out = work / f"build-gen{generation}-real{fraction:g}"
                metrics = metrics_of(build(work, project, out))
                if not rows:  # generation 0: the teacher, as the first build's teacher stage measured it on the real test pages
                    rows.append(row(0, 0.0, metrics["teacher.perplexity"]["value"], teacher, data))
                parent = student_folder(out, work / f"gen{generation}-real{fraction:g}")
                rows.append(row(generation, fraction, metrics["student.perplexity"]["value"], parent, data))
                write(_result(args, rows, start, load_before), final=False)
    write(_result(args, rows, start, load_before), final=True)


def _result(args: argparse.Namespace, rows: list[dict], start: float, load_before: float) -> dict:
    host = host_info()
    return {"what": __doc__.split("\n\n")[0], "generations": rows,
            "how": (f"measured on this host ({host['cpu']}, {host['cores']} cores); {args.max_chars:,} characters of train text; "
                    f"student {vars(STUDENT)}, {args.epochs} epochs per generation, lr {LR}; generations sampled at temperature 1 "
                    f"from {PROMPT}-token prompts; diversity over {SAMPLES} samples of {NEW_TOKENS} tokens; toolchain "
                    f"{versions(('torch', 'transformers', 'onnxruntime'))}; wall time {(time.perf_counter() - start) / 60:.1f} min, "
                    f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"),
            "host": host}


if __name__ == "__main__":
    main()
