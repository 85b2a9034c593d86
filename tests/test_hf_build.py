"""End-to-end: `edgekd build` with Hugging Face models: a BERT teacher given as a local model folder
(an encoder saved with save_pretrained, fine-tuned here for the task), a student from the teacher's
config with fewer layers started from its weights (DistilBERT-style), the transformer losses
(Hinton + TinyBERT hidden MSE + MiniLM attention KL), exported by optimum-onnx; and cross-input
distillation, the teacher reading a longer view of each sample than the student. Random weights
and a generated corpus: this proves the pipeline, not a model. Bad HF inputs exit 2 with one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write
from test_text_build import corpus

pytestmark = pytest.mark.slow

ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
LOSSES = ('[{ name = "hinton" }, '
          '{ name = "hidden_mse", weight = 0.1, params = { pairs = [["bert.encoder.layer.0", "bert.encoder.layer.1"]] } }, '
          '{ name = "attention_kl", params = { heads = 2, pairs = [["bert.encoder.layer.0.attention.self", "bert.encoder.layer.1.attention.self"]] } }]')


def project(teacher: str, student: str, data: str = "", losses: str = '[{ name = "hinton" }]', train: bool = True) -> str:
    return f"""name = "topics-hf"
[teacher.hf]
{teacher}
{'[teacher.train]' if train else ''}
{'epochs = 2' if train else ''}
{'lr = 0.002' if train else ''}
{'batch_size = 32' if train else ''}
[student.hf]
{student}
[data]
files = {{ train = "train.jsonl", calib = "calib.jsonl", test = "test.jsonl" }}
tokenizer = "tokenizer.json"
label_column = "label"
max_length = 16
{data}
[task]
kind = "text-classification"
[distill]
losses = {losses}
epochs = 2
lr = 0.003
batch_size = 32
[quantize]
calibration_samples = 60
"""


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The topics corpus with a short view of each text (its first 3 words), a tokenizer trained on
    the train split, and a BERT encoder folder (no classification head) whose vocabulary fits it."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("topics-hf")
    files = corpus(folder)
    for path in files.values():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        write(path, "".join(json.dumps({**r, "short": " ".join(r["text"].split()[:3])}) + "\n" for r in rows))
    texts = [json.loads(line)["text"] for line in files["train"].read_text().splitlines()]
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(train_word_tokenizer(texts, folder / "tokenizer.json"))).get_vocab_size()
    BertModel(BertConfig(vocab_size=vocab, **ENCODER)).save_pretrained(folder / "encoder")
    return folder


def build(folder: Path, toml: str, cache_dir: Path, name: str, profile: str = "ci") -> tuple[int, str, Path]:
    path = write(folder / f"{name}.toml", toml)
    out = folder / f"build-{name}"
    code, stdout, stderr = run_cli(["build", "--project", str(path), "--target", "x86", "--profile", profile, "--out", str(out)], cache_dir)
    return code, stdout + stderr, out


def notes_of(out: Path) -> dict[str, str]:
    report = json.loads((out / "report.json").read_text())
    return {s["name"]: " ".join(s.get("notes", [])) for s in report["stages"]}


def test_a_folder_teacher_fine_tuned_here_teaches_a_distilbert_initialised_student(topics, cache_dir):
    code, log, out = build(topics, project('path = "encoder"', 'base = "teacher"\nnum_hidden_layers = 1\ninit = "teacher"', losses=LOSSES),
                           cache_dir, "folder")
    assert code == 0, log
    notes = notes_of(out)
    assert "Hugging Face model folder" in notes["teacher"] and "trained here" in notes["teacher"]
    assert "student initialised from the teacher (DistilBERT-style)" in notes["distill"]
    assert "student layers [0] <- teacher layers [0]" in notes["distill"]
    assert "optimum-onnx (BertForSequenceClassification, optimum task 'text-classification'" in notes["export"]
    import onnx

    graph = onnx.load(out / "student.onnx").graph
    assert [i.name for i in graph.input][:2] == ["input_ids", "attention_mask"]
    metrics = {k: m for s in json.loads((out / "report.json").read_text())["stages"] for k, m in s["metrics"].items()}
    assert metrics["export.parity_max_abs_diff"]["value"] <= 1e-4
    assert metrics["teacher.macs"]["value"] > metrics["student.macs"]["value"]
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(out / "tokenizer"))  # the data's tokenizer travels with the build
    assert saved.get_vocab() == Tokenizer.from_file(str(topics / "tokenizer.json")).get_vocab()
    assert "tokenizer/ (data.tokenizer tokenizer.json" in notes["export"]
    assert AutoTokenizer.from_pretrained(str(out / "bundle" / "tokenizer")).get_vocab() == saved.get_vocab()  # and the deploy bundle


def test_cross_input_the_teacher_reads_the_whole_text_the_student_its_first_words(topics, cache_dir):
    toml = project(f"model_type = \"bert\"\n{chr(10).join(f'{k} = {v}' for k, v in ENCODER.items())}",
                   'base = "teacher"\nhidden_size = 16\nnum_attention_heads = 2\nnum_hidden_layers = 1',
                   'text_column = "short"\nteacher_text_column = "text"\nteacher_max_length = 16').replace("max_length = 16\ntext", "max_length = 4\ntext")
    # a student that sees 3 words of each text falls well behind a teacher that reads all of them (99 % vs 78 % here): the ci
    # profile's 8-pt distill budget would stop the build, so this one runs under the ci profile without accuracy budgets
    ci = (Path(__file__).parents[1] / "profiles" / "ci.toml").read_text()
    profile = write(topics / "cross-profile.toml", ci.replace("distill_accuracy_drop_pt = 8.0\n", "").replace("overall_accuracy_drop_pt = 10.0\n", ""))
    code, log, out = build(topics, toml, cache_dir, "cross", str(profile))
    assert code == 0, log
    assert "the teacher reads column 'text' (max_length 16 tokens), the student 'short' (max_length 4)" in notes_of(out)["teacher"]
    import onnx

    dims = [d.dim_param or d.dim_value for d in onnx.load(out / "student.onnx").graph.input[0].type.tensor_type.shape.dim]
    assert len(dims) == 2  # the student's engine reads token ids only (its own short view)
    metrics = {k: m for s in json.loads((out / "report.json").read_text())["stages"] for k, m in s["metrics"].items()}
    # the teacher's MACs are counted at its own (longer) view's length
    assert metrics["teacher.macs"]["value"] > 4 * metrics["student.macs"]["value"]


@pytest.mark.parametrize("case, teacher, student, message", [
    ("head", 'path = "encoder"', 'base = "teacher"', "has no trained text-classification head for this data's 3 labels"),
    ("typo", 'model_type = "bert"\nnum_hiden_layers = 2', 'base = "teacher"', "BertConfig has no field 'num_hiden_layers' (closest: num_hidden_layers)"),
    ("positions", 'model_type = "bert"\nmax_position_embeddings = 8', 'base = "teacher"', "max_position_embeddings 8 < the data's max_length 16"),
    ("width", 'model_type = "bert"\nhidden_size = 32\nnum_attention_heads = 4\nmax_position_embeddings = 16',
     'base = "teacher"\nhidden_size = 16\nnum_attention_heads = 2\ninit = "teacher"', "hidden_size 16 is not the teacher's 32"),
])
def test_hugging_face_models_edgekd_cannot_use_are_one_line_errors(topics, cache_dir, case, teacher, student, message):
    code, log, out = build(topics, project(teacher, student, train=case != "head"), cache_dir, f"bad-{case}")
    assert code == 2, log
    assert message in log and "Traceback" not in log
    assert not (out / "report.json").exists()
