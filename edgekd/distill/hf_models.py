"""Hugging Face transformers models as a project's teacher or student ([teacher.hf], [student.hf]):
from a local model folder (`from_pretrained` on a path, `local_files_only`: nothing is downloaded),
from the teacher's config with overrides (`base = "teacher"`), or from a fresh config of a model
type. The head follows the task (sequence classification, image classification, causal LM) and
its dims (labels, vocabulary, image size) come from the data, as for factories.

A project's [*.hf] table is resolved once (`resolve`: absolute paths, the folder's content hash)
into the args of the factory `build`, so the stage cache and student.json name the model exactly.
`init_from_teacher` starts a student from its teacher's weights the way DistilBERT did (Sanh et al.
2019, arXiv:1910.01108: embeddings and head copied, one teacher layer out of every k).
transformers is imported inside the functions that use it.
"""
from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

from edgekd.common.fsutil import sha256_file
from edgekd.common.toolchain import quiet
from edgekd.config.hf import HfModelSpec
from edgekd.errors import ConfigError, ToolchainMissing

FACTORY = "edgekd.distill.hf_models:build"
# task -> (transformers auto class, the architecture suffix of a folder whose head suits the task)
HEADS = {"text-classification": ("AutoModelForSequenceClassification", "ForSequenceClassification"),
         "image-classification": ("AutoModelForImageClassification", "ForImageClassification"),
         "causal-lm": ("AutoModelForCausalLM", "ForCausalLM")}
WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")  # what a model folder's identity hashes
LAYER_KEY = re.compile(r"^(.*\.(?:layer|layers|h|block|blocks))\.(\d+)\.(.+)$")  # encoder/decoder layer lists


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of each config, weight and tokenizer file of a model folder (its identity in cache keys)."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in WEIGHT_SUFFIXES}


def resolve(spec: HfModelSpec, key: str, base_dir: Path, teacher: HfModelSpec | None = None) -> dict[str, Any]:
    """The [*.hf] table `spec` (at config `key`) as the JSON args of `build`: the folder absolute and
    hashed; `base = "teacher"` replaced by the teacher's own resolved spec (`teacher`)."""
    resolved: dict[str, Any] = {"key": key, "overrides": spec.overrides(), "init": spec.init}
    if spec.path is not None:
        folder = (base_dir / spec.path).resolve()
        if not (folder / "config.json").is_file():
            raise ConfigError(f"key '{key}.path': {folder} is not a Hugging Face model folder (no config.json)",
                              "give a folder written by save_pretrained (config.json and model weights), relative to the project file")
        resolved |= {"path": str(folder), "files": folder_digest(folder)}
    elif spec.model_type is not None:
        resolved["model_type"] = spec.model_type
    else:
        if teacher is None:
            raise ConfigError(f"key '{key}.base': base = 'teacher' needs a Hugging Face teacher ([teacher.hf])",
                              "give the student a 'model_type' (or a 'path'), or give the teacher as [teacher.hf]")
        resolved["base"] = resolve(teacher, "teacher.hf", base_dir)
    return resolved


def _auto(name: str) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise ToolchainMissing("[teacher.hf] / [student.hf] models need transformers", "pip install 'edgekd[hf]'") from exc
    return getattr(transformers, name)


def _head_dim_derived(config: Any) -> bool:
    """Whether the config's head_dim is the one its __init__ derives (hidden_size // heads), so it
    follows those two when they are overridden (Llama-family configs store it; an explicit one, as
    Gemma's, is kept)."""
    heads = getattr(config, "num_attention_heads", None)
    dim = getattr(config, "head_dim", None)
    return bool(heads) and dim is not None and dim == getattr(config, "hidden_size", 0) // heads


def _override(config: Any, overrides: dict[str, Any], key: str) -> Any:
    """`config` with `overrides` set; a key the config does not have is refused (transformers would
    keep it silently, so a typo would change nothing). A derived head_dim is derived again."""
    known = config.to_dict()
    derived = _head_dim_derived(config) and "head_dim" not in overrides
    for name, value in overrides.items():
        if name not in known:
            near = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
            raise ConfigError(f"key '{key}.{name}': {type(config).__name__} has no field '{name}'"
                              + (f" (closest: {', '.join(near)})" if near else ""),
                              f"override fields of the model's config: {', '.join(sorted(known)[:40])}, ...")
        setattr(config, name, value)
    if derived:
        config.head_dim = config.hidden_size // config.num_attention_heads
    return config


def base_config(resolved: dict[str, Any]) -> Any:
    """The transformers config of a resolved spec, overrides applied (the head's dims not yet set)."""
    auto_config = _auto("AutoConfig")
    key = resolved["key"]
    try:
        if "path" in resolved:
            config = auto_config.from_pretrained(resolved["path"], local_files_only=True)
        elif "model_type" in resolved:
            config = auto_config.for_model(resolved["model_type"])
        else:
            config = base_config(resolved["base"])
    except (ValueError, OSError, KeyError) as exc:
        raise ConfigError(f"key '{key}': transformers cannot make its config ({str(exc).splitlines()[0]})",
                          "give a model_type transformers knows (bert, distilbert, vit, gpt2, llama, ...) or a valid model folder") from None
    return _override(config, resolved["overrides"], key)


def _set_task_dims(config: Any, task: str, dims: dict[str, Any], fresh: bool) -> None:
    """The head's and the inputs' dims from the task: labels; for a fresh model also the vocabulary
    (the data's tokenizer) and the image size; a folder's model must already cover them."""
    labels = dims.get("num_labels") or dims.get("num_classes")
    if labels and task != "causal-lm" and config.num_labels != labels:
        config.num_labels = labels
    vocab = dims.get("vocab_size")
    if vocab and hasattr(config, "vocab_size"):
        if fresh and "vocab_size" not in dims.get("_overrides", {}):
            config.vocab_size = vocab
        elif config.vocab_size < vocab:
            raise ConfigError(f"key '{dims['_key']}': the model's vocabulary has {config.vocab_size} tokens, the data's tokenizer {vocab}",
                              "use the model's own tokenizer for the data (data.tokenizer = the model folder), or a model with a larger vocabulary")
    shape = dims.get("input_shape")
    if fresh and shape and hasattr(config, "image_size"):
        config.num_channels, config.image_size = shape[0], shape[1]
    positions = getattr(config, "max_position_embeddings", None)
    if dims.get("max_length") and positions is not None and positions < dims["max_length"]:
        raise ConfigError(f"key '{dims['_key']}': max_position_embeddings {positions} < the data's max_length {dims['max_length']}",
                          f"set max_position_embeddings = {dims['max_length']} (or more) in [{dims['_key']}], or shorten data.max_length")


def build(spec: dict[str, Any], task: str, vocab_size: int | None = None, num_labels: int | None = None,
          num_classes: int | None = None, max_length: int | None = None, input_shape: tuple[int, ...] | None = None) -> Any:
    """A transformers PreTrainedModel with the task's head: the folder's weights (`path`), or fresh
    random weights from the config (`model_type`, `base`). The task dims fill what the config
    leaves to the data (see `_set_task_dims`)."""
    if task not in HEADS:
        raise ConfigError(f"key '{spec['key']}': Hugging Face models are supported for tasks {', '.join(HEADS)}, not {task}",
                          "give a factory returning a torch module for this task")
    config = base_config(spec)
    if spec.get("own_vocabulary"):  # a teacher aligned to the data's vocabulary ([distill] vocab_alignment) keeps its own
        vocab_size = None
    dims = {"vocab_size": vocab_size, "num_labels": num_labels, "num_classes": num_classes, "max_length": max_length,
            "input_shape": input_shape, "_key": spec["key"], "_overrides": spec["overrides"]}
    _set_task_dims(config, task, dims, fresh="path" not in spec)
    auto_model = _auto(HEADS[task][0])
    try:
        if "path" in spec:  # quiet: transformers' advice to train a new head goes to stderr; the teacher stage says what it does
            with quiet():
                return auto_model.from_pretrained(spec["path"], config=config, local_files_only=True, ignore_mismatched_sizes=True)
        return auto_model.from_config(config)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        raise ConfigError(f"key '{spec['key']}': transformers cannot build {type(config).__name__} for {task} "
                          f"({str(exc).splitlines()[0]})", "check the config overrides (e.g. hidden_size a multiple of num_attention_heads)") from None


def head_is_trained(spec: dict[str, Any], task: str, classes: int | None) -> bool:
    """Whether a model folder already holds a trained head for the task: its architecture has the
    task's head and (classifiers) as many labels as the data."""
    config = json.loads((Path(spec["path"]) / "config.json").read_text())
    suffixes = (HEADS.get(task, ("", ""))[1], *(("LMHeadModel",) if task == "causal-lm" else ()))  # GPT2LMHeadModel too
    if not any(a.endswith(suffixes) for a in config.get("architectures") or []):
        return False
    labels = len(config.get("id2label") or {}) or config.get("num_labels")
    return task == "causal-lm" or labels == classes


def describe(spec: dict[str, Any]) -> str:
    """One line for reports: where the model comes from and what it overrides."""
    over = f" with {spec['overrides']}" if spec["overrides"] else ""
    if "path" in spec:
        return f"Hugging Face model folder {spec['path']}{over}"
    if "model_type" in spec:
        return f"Hugging Face {spec['model_type']} config{over}"
    return f"the teacher's Hugging Face config ({describe(spec['base'])}){over}"


def _layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer for each student layer: one out of every k (DistilBERT: k = 2), from the bottom."""
    if student_layers > teacher_layers:
        raise ConfigError(f"init = 'teacher': the student has {student_layers} layers, the teacher only {teacher_layers}",
                          "give the student at most as many layers as the teacher (num_hidden_layers)")
    step = teacher_layers // student_layers
    return [i * step for i in range(student_layers)]


def _layer_count(state: dict[str, Any]) -> int:
    return len({int(m.group(2)) for m in map(LAYER_KEY.match, state) if m})


def init_from_teacher(student: Any, teacher: Any) -> str:
    """Copy the teacher's weights into the student (DistilBERT's initialisation): every tensor whose
    name and shape match, with student layer i taking teacher layer i·k (k = teacher layers //
    student layers). Returns a note of what was copied and what stayed random."""
    s_state, t_state = student.state_dict(), teacher.state_dict()
    s_hidden = getattr(student.config, "hidden_size", None)
    t_hidden = getattr(getattr(teacher, "config", None), "hidden_size", None)
    if s_hidden != t_hidden:
        raise ConfigError(f"[student.hf] init = 'teacher': the student's hidden_size {s_hidden} is not the teacher's {t_hidden}",
                          "DistilBERT-style initialisation copies whole layers: keep the teacher's hidden_size (fewer layers only)")
    layer_map = _layer_map(_layer_count(s_state), _layer_count(t_state))
    copied, kept = 0, []
    for name, tensor in s_state.items():
        match = LAYER_KEY.match(name)
        source = f"{match.group(1)}.{layer_map[int(match.group(2))]}.{match.group(3)}" if match else name
        if source in t_state and t_state[source].shape == tensor.shape:
            tensor.copy_(t_state[source])
            copied += 1
        else:
            kept.append(name)
    student.load_state_dict(s_state)
    left = f"; kept random: {', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''}" if kept else ""
    return (f"student initialised from the teacher (DistilBERT-style): {copied} of {len(s_state)} tensors copied, "
            f"student layers {list(range(len(layer_map)))} <- teacher layers {layer_map}{left}")


def check_tokenizer(spec: dict[str, Any], data_vocab: dict[str, int], data_tokenizer: str, alignment: str = "none") -> None:
    """A model folder that brings its own tokenizer must use the data's: the same token ids for the
    same pieces, unless `alignment` ([distill] vocab_alignment, causal-lm teachers: the caller passes
    it for a teacher only) is "shared_tokens": then edgekd.distill.vocab_align pairs the vocabularies."""
    folder = Path(spec["path"])
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "tokenizer.model")):
        return
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(folder), local_files_only=True).get_vocab()
    if vocab != data_vocab and alignment != "shared_tokens":
        differ = sum(1 for piece, i in vocab.items() if data_vocab.get(piece) != i)
        raise ConfigError(f"key '{spec['key']}.path': the tokenizer in {folder} differs from data.tokenizer {data_tokenizer} "
                          f"({len(vocab)} vs {len(data_vocab)} tokens, {differ} pieces with another id): the model would read other words",
                          f"tokenize the data with the model's own tokenizer (data.tokenizer = \"{folder}\"), or, for a "
                          "causal-lm teacher, set [distill] vocab_alignment = \"shared_tokens\"")
