"""End-to-end: `edgekd build` of a text-classification project whose data are local json-lines files
read through Hugging Face datasets and tokenized with a tokenizer trained here (the Task seam and a
streaming data source through every stage: teacher, distill, export with token inputs, INT8,
engine tuning, evaluation, bench). The corpus is generated (topic words in random sentences), so this
proves the pipeline, not a model."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from helpers import run_cli, train_word_tokenizer, write

pytestmark = pytest.mark.slow

TOPICS = {
    "pets": "cat dog puppy kitten leash collar bark purr vet fur paw treat",
    "weather": "rain snow storm cloud sunny wind thunder fog forecast cold warm humid",
    "food": "bread cheese soup salad pasta oven recipe spicy sweet dinner lunch bake",
}
FILLER = "the a on in at with and of to for was is very today quite some".split()
SIZES = {"train": 480, "calib": 60, "test": 120}


def corpus(folder: Path, seed: int = 0) -> dict[str, Path]:
    """One json-lines file per split: {"text", "label"} with 3 topics, 6-12 words per sentence."""
    rng = random.Random(seed)
    files = {}
    for split, count in SIZES.items():
        lines = []
        for i in range(count):
            label = sorted(TOPICS)[i % len(TOPICS)]
            words = [rng.choice(TOPICS[label].split()) if rng.random() < 0.4 else rng.choice(FILLER) for _ in range(rng.randint(6, 12))]
            lines.append(json.dumps({"text": " ".join(words), "label": label}))
        files[split] = write(folder / f"{split}.jsonl", "\n".join(lines) + "\n")
    return files


PROJECT = """name = "topics"
[teacher]
factory = "edgekd.examples.text:teacher"
args = { width = 32 }
[teacher.train]
epochs = 4
lr = 0.01
batch_size = 32
[student]
factory = "edgekd.examples.text:student"
args = { width = 8 }
[data]
files = { train = "train.jsonl", calib = "calib.jsonl", test = "test.jsonl" }
tokenizer = "tokenizer.json"
label_column = "label"
max_length = 16
[task]
kind = "text-classification"
[distill]
epochs = 4
lr = 0.01
batch_size = 32
[quantize]
calibration_samples = 60
"""


@pytest.fixture(scope="module")
def text_build(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    folder = tmp_path_factory.mktemp("topics")
    files = corpus(folder)
    train_word_tokenizer([json.loads(line)["text"] for line in files["train"].read_text().splitlines()], folder / "tokenizer.json")
    project, out_dir = write(folder / "edgekd.toml", PROJECT), folder / "build"
    code, out, err = run_cli(["build", "--project", str(project), "--target", "x86", "--profile", "ci", "--out", str(out_dir)], cache_dir)
    return code, out, err, out_dir


def test_text_classification_builds_through_every_stage(text_build):
    code, out, err, out_dir = text_build
    assert code == 0, out + err
    report = json.loads((out_dir / "report.json").read_text())
    assert report["verdict"] == "pass"
    import jsonschema

    from edgekd.report.build_report import SCHEMA_FILE

    jsonschema.validate(report, json.loads(SCHEMA_FILE.read_text()))
    assert report["task"]["name"] == "text-classification"
    data = report["provenance"]["data"]
    assert data["factory"] is None and data["files"]["train"] == "train.jsonl" and data["num_classes"] == 3
    assert data["splits"] == {"train": 480, "calib": 60, "test": 120} and data["input_shape"] == [16]
    assert [s["status"] for s in report["stages"]] == ["ran"] * 10
    metrics = {k: m for s in report["stages"] for k, m in s["metrics"].items()}
    for prefix in ("teacher", "student", "onnx_fp32", "int8", "engine"):
        m = metrics[f"{prefix}.accuracy"]
        assert m["method"] == "measured" and 0.0 <= m["value"] <= 100.0, prefix
        assert "120 held-out test samples" in m["how"], prefix
    # the topics are learnable: well above chance (33 %)
    assert metrics["teacher.accuracy"]["value"] > 60.0 and metrics["engine.accuracy"]["value"] > 50.0
    assert metrics["latency.p90_ms"]["method"] == "measured"


def test_the_exported_student_takes_the_tokenizers_inputs(text_build):
    import onnx

    out_dir = text_build[3]
    model = onnx.load(str(out_dir / "student.onnx"))
    inputs = {i.name: i for i in model.graph.input}
    assert {"input_ids", "attention_mask"} <= set(inputs)
    for name in ("input_ids", "attention_mask"):
        tensor = inputs[name].type.tensor_type
        assert tensor.elem_type == onnx.TensorProto.INT64
        dims = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        assert dims == ["batch_size", "sequence_length"], name  # dynamic batch and sequence
    int8 = onnx.load(str(out_dir / "student_int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
