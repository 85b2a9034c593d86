"""The file names stages hand to each other (and the build folder shows): defined once, here."""
from __future__ import annotations

STUDENT_JSON = "student.json"  # search: which student (factory, args, the search's table)
TEACHER_JSON = "teacher.json"  # teacher: what the teacher is (kind, description, identity)
TEACHER_WEIGHTS = "teacher.safetensors"
ASSISTANT_JSON = "assistant.json"  # assistants: the chain's last link
ASSISTANT_WEIGHTS = "assistant.safetensors"
STUDENT_WEIGHTS = "student.safetensors"  # distill
STUDENT_ONNX = "student.onnx"  # export (compile: the imported model)
TOKENIZER_DIR = "tokenizer"  # export, text data: the data's tokenizer (save_pretrained), what the engine's token ids mean
STUDENT_INT8 = "student_int8.onnx"  # quantize
STUDENT_FUSED = "student_fused.onnx"  # quantize, x86 targets: the fused fp32 graph of a transformer
STUDENT_QAD_ONNX = "student_qad.onnx"  # quantize, when QAD ran
STUDENT_QAD_WEIGHTS = "student_qad.safetensors"
SUPPORT_JSON = "support.json"  # check
ENGINE_JSON = "engine.json"  # compile: what the engine is; later stages key on it
ENGINE_DIR = "engine"  # compile: the files this host evaluates and benches
BUNDLE_DIR = "bundle"  # compile: the deploy bundle
BENCH_JSON = "bench.json"  # bench
MANIFEST = "stage.json"  # every cache entry: the stage's metrics and notes


def optional(name: str) -> str:
    """A stage input that only some builds have (e.g. a distillation build's weights)."""
    return name + "?"


def folder(name: str) -> str:
    """A stage output that is a folder it may write."""
    return name + "/"
