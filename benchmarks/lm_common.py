"""What benchmarks/distill_lm.py and benchmarks/lm_generations.py share: the Python-docs data
(`python -m edgekd.examples.pydocs prepare`, a slice of the train pages), the Llama teacher trained
once by an `edgekd build` and kept as a transformers folder (every later build reads it with
`[teacher.hf] path`, so it is the same teacher whatever edgekd source changes in between), the
no-budget profile, and one build's numbers from its report."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import edgekd
from edgekd.examples import pydocs

RESULTS = Path(__file__).parent / "results"
TEACHER = pydocs.FULL.teacher
STUDENT = pydocs.FULL.student
MAX_LENGTH = pydocs.FULL.max_length
LR, WARMUP, BATCH = 0.002, 0.05, 16
PROFILE = '''description = "LM benchmarks: no budgets that could stop a run; short latency measurements"
[budgets]
export_parity_max_abs_diff = 1e-3
[recipe.bench]
warmup_runs = 20
min_runs = 100
max_seconds = 3.0
prompt_tokens = 64
decode_tokens = 32
'''


def prepare_data(work: Path, max_chars: int) -> Path:
    """The data folder (splits, tokenizer, the example's own project) under `work`, made once."""
    data = work / "data"
    if not (data / "edgekd.toml").is_file():
        pydocs.prepare(data, max_chars=max_chars)
    (work / "bench-profile.toml").write_text(PROFILE)
    return data


def student_data(work: Path, chars: int | None) -> Path:
    """The folder the students' projects live in: work/data itself, or (with `chars`) a copy of it whose
    train.txt keeps only its first paragraphs up to `chars` characters (the data-limited setting: the
    teacher saw all of work/data's train text, the students see a prefix of it; same tokenizer, calib
    and test text)."""
    data = work / "data"
    if chars is None:
        return data
    folder = work / f"data-{chars}"
    if not (folder / "train.txt").is_file():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(data, tmp)
        kept, total = [], 0
        for line in (data / "train.txt").read_text(encoding="utf-8").splitlines():
            if total >= chars:
                break
            kept.append(line + "\n")
            total += len(line)
        (tmp / "train.txt").write_text("".join(kept), encoding="utf-8")
        tmp.rename(folder)
    return folder


def llama_table(size: pydocs.Llama) -> str:
    return size.toml(MAX_LENGTH)


def data_table() -> str:
    return f'''[data]
files = {{ train = "train.txt", calib = "calib.txt", test = "test.txt" }}
tokenizer = "tokenizer"
max_length = {MAX_LENGTH}
[task]
kind = "causal-lm"
[quantize]
calibration_samples = 64
'''


def build(work: Path, project: Path, out: Path) -> dict:
    """`edgekd build` for x86 under the benchmark profile; the report."""
    result = edgekd.build(target="x86", profile=str(work / "bench-profile.toml"), project=project, out=out,
                          cache_dir=work / "cache", log=lambda line: print(line, file=sys.stderr))
    return result.report


def train_teacher(work: Path, epochs: int) -> Path:
    """work/teacher: the Llama teacher trained by an edgekd build's teacher stage (a build with a
    one-epoch student, whose other stages are not used), saved as a transformers folder with the
    data's tokenizer."""
    folder = work / "teacher"
    if (folder / "config.json").is_file():
        return folder
    project = work / "data" / "teacher-phase.toml"
    project.write_text(f'''name = "pydocs-teacher"
[teacher.hf]
model_type = "llama"
{llama_table(TEACHER)}[teacher.train]
epochs = {epochs}
lr = {LR}
warmup_ratio = {WARMUP}
batch_size = {BATCH}
seed = 0
[student.hf]
base = "teacher"
{llama_table(STUDENT)}{data_table()}[distill]
losses = [{{ name = "ce" }}]
epochs = 1
batch_size = {BATCH}
''')
    out = work / "build-teacher-phase"
    try:
        build(work, project, out)
    except edgekd.errors.EdgekdError as exc:  # only the teacher stage's weights are needed here
        print(f"teacher phase: the build stopped after the teacher ({exc})", file=sys.stderr)
    if not (out / "teacher.safetensors").is_file():
        raise SystemExit(f"teacher phase: {out}/teacher.safetensors was not written")
    save_teacher_folder(out / "teacher.safetensors", work / "data" / "tokenizer", folder)
    return folder


def save_teacher_folder(weights: Path, tokenizer: Path, folder: Path) -> None:
    from safetensors.torch import load_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=MAX_LENGTH, tie_word_embeddings=True,  # as the teacher phase's
                         bos_token_id=pydocs.END_OF_TEXT_ID, eos_token_id=pydocs.END_OF_TEXT_ID, pad_token_id=pydocs.END_OF_TEXT_ID,
                         **vars(TEACHER))
    model = LlamaForCausalLM(config)
    load_model(model, str(weights), strict=True)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(folder)


def metrics_of(report: dict) -> dict:
    return {k: v for s in report["stages"] for k, v in s["metrics"].items()}


def write_json(path: Path, result: dict) -> None:
    from edgekd.common.fsutil import atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=1))
