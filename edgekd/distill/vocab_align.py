"""Teacher and student vocabularies that differ ([distill] vocab_alignment = "shared_tokens", causal-lm):
the teacher's next-token distribution is compared with the student's on the token strings both
vocabularies hold, each renormalised there, and the teacher probability mass that falls on tokens
the student does not have is measured (the "dropped mass", mean per token).

The mapping (`build_alignment`) pairs tokens by string after normalising the word-start markers of
byte-level BPE ("Ġ") and SentencePiece ("▁") to one space, and SentencePiece byte-fallback pieces
("<0x41>") to the character they stand for where it is printable ASCII. Special tokens are paired
by role (pad, eos, bos, unk), not by spelling ("</s>" and "<|endoftext|>" are both the end of a
sequence); other special tokens pair only with the same string.

`AlignedTeacher` wraps a teacher that reads its inputs: it feeds the teacher the data's token ids
translated one for one into the teacher's ids of the same strings (the unk id where the teacher
has none), and returns its logits in the student's vocabulary, UNSCORED_LOGIT on the student
tokens the teacher has no counterpart for, which the LM losses (edgekd.distill.lm_losses) leave out.

Limit: the teacher reads the student's segmentation of the text, not its own tokenization of the
same text; positions line up one for one, but a teacher trained on another segmentation reads an
unusual one. Re-tokenizing for the teacher and aligning the two sequences by character offsets
(as ULD/GOLD do) is not done here.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.distill.lm_losses import LM_LOSSES, UNSCORED_LOGIT
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgekd.distill.teachers import Feed, TeacherSource

KEY = "distill.vocab_alignment"
SPACE_MARKERS = ("Ġ", "▁")  # byte-level BPE (GPT-2), SentencePiece (Llama, T5)
BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SPECIAL_ROLES = ("pad", "eos", "bos", "unk")


def normalise(piece: str) -> str:
    """A token string in a spelling shared across tokenizer families (see the module docstring)."""
    byte = BYTE_PIECE.match(piece)
    if byte:
        char = chr(int(byte.group(1), 16))
        return char if 32 <= ord(char) < 127 else piece
    for marker in SPACE_MARKERS:
        if piece.startswith(marker):
            return " " + piece[len(marker):]
    return piece


def special_ids(tokenizer: Any) -> dict[str, int]:
    """role -> id of a transformers tokenizer's pad/eos/bos/unk tokens (those it has)."""
    ids = {role: getattr(tokenizer, f"{role}_token_id", None) for role in SPECIAL_ROLES}
    return {role: int(i) for role, i in ids.items() if i is not None}


@dataclass(frozen=True)
class VocabAlignment:
    """Student token `student_ids[k]` is teacher token `teacher_ids[k]`; `to_teacher[s]` is the
    teacher id fed for student id s (`teacher_unk` where the teacher has no such string, or -1)."""

    student_ids: np.ndarray
    teacher_ids: np.ndarray
    to_teacher: np.ndarray
    teacher_size: int
    teacher_unk: int

    @property
    def student_size(self) -> int:
        return len(self.to_teacher)

    def sha256(self) -> str:
        payload = json.dumps([self.student_ids.tolist(), self.teacher_ids.tolist(), self.teacher_size, self.teacher_unk])
        return hashlib.sha256(payload.encode()).hexdigest()

    def describe(self) -> str:
        return (f"{len(self.student_ids)} of the student's {self.student_size} tokens paired with the teacher's "
                f"{self.teacher_size} (shared token strings)")


def build_alignment(student_vocab: dict[str, int], teacher_vocab: dict[str, int], student_specials: dict[str, int],
                    teacher_specials: dict[str, int], student_size: int | None = None, teacher_size: int | None = None) -> VocabAlignment:
    """The pairing of two vocabularies (string -> id) on their shared tokens; sizes default to the
    vocabularies' (a model may have more rows than its tokenizer has tokens)."""
    s_size = student_size or max(student_vocab.values()) + 1
    t_size = teacher_size or max(teacher_vocab.values()) + 1
    pairs: dict[int, int] = {}  # student id -> teacher id, one to one (a teacher token's mass is counted once)
    for role, s_id in student_specials.items():
        if role in teacher_specials and s_id not in pairs and teacher_specials[role] not in pairs.values():
            pairs[s_id] = teacher_specials[role]
    special_s, special_t = set(student_specials.values()), set(teacher_specials.values())
    by_string: dict[str, int] = {}
    for piece, t_id in sorted(teacher_vocab.items(), key=lambda kv: kv[1]):
        if t_id not in special_t:
            by_string.setdefault(normalise(piece), t_id)
    used = set(pairs.values())
    for piece, s_id in sorted(student_vocab.items(), key=lambda kv: kv[1]):
        if s_id in special_s or s_id in pairs:
            continue
        match = by_string.get(normalise(piece), teacher_vocab.get(piece))
        if match is not None and match not in special_t and match not in used:
            pairs[s_id] = match
            used.add(match)
    pairs = {s: t for s, t in pairs.items() if s < s_size and t < t_size}
    if not pairs:
        raise ConfigError(f"key '{KEY}': the teacher's and the data's tokenizers share no token", "use a teacher whose "
                          "tokenizer shares tokens with the data's, or tokenize the data with the teacher's tokenizer")
    student_ids = np.array(sorted(pairs), dtype=np.int64)
    teacher_ids = np.array([pairs[s] for s in student_ids], dtype=np.int64)
    unk = teacher_specials.get("unk", -1)
    to_teacher = np.full(s_size, unk, dtype=np.int64)
    to_teacher[student_ids] = teacher_ids
    return VocabAlignment(student_ids, teacher_ids, to_teacher, t_size, unk)


def align_logits(teacher_logits: torch.Tensor, alignment: VocabAlignment) -> torch.Tensor:
    """[..., V_teacher] -> [..., V_student]: the paired tokens' logits, UNSCORED_LOGIT elsewhere."""
    import torch

    out = torch.full((*teacher_logits.shape[:-1], alignment.student_size), UNSCORED_LOGIT, dtype=teacher_logits.dtype)
    out[..., torch.from_numpy(alignment.student_ids)] = teacher_logits[..., torch.from_numpy(alignment.teacher_ids)]
    return out


def dropped_mass(teacher_logits: torch.Tensor, alignment: VocabAlignment) -> torch.Tensor:
    """[...]: the teacher's probability on tokens the student has no counterpart for, per position."""
    import torch

    probs = teacher_logits.float().softmax(dim=-1)
    return (1.0 - probs[..., torch.from_numpy(alignment.teacher_ids)].sum(dim=-1)).clamp(min=0.0)


@dataclass
class MassTally:
    """Dropped teacher mass summed over the real tokens seen, and unk substitutions in the inputs."""

    mass: float = 0.0
    tokens: int = 0
    unk_inputs: int = 0

    def mean(self) -> float | None:
        return self.mass / self.tokens if self.tokens else None


@dataclass
class AlignedTeacher:
    """A teacher that reads its inputs, fed the data's ids translated into its own and answering in
    the student's vocabulary (module docstring); `tally` counts what it dropped."""

    inner: TeacherSource
    alignment: VocabAlignment
    tally: MassTally = field(default_factory=MassTally)

    def __post_init__(self) -> None:
        if not self.inner.reads_inputs:
            raise ConfigError(f"key '{KEY}': aligning vocabularies needs a teacher that reads token ids, and the teacher is "
                              f"{self.inner.describe()}", "use a torch, Hugging Face or ONNX teacher")

    def describe(self) -> str:
        return f"{self.inner.describe()}, aligned to the data's vocabulary: {self.alignment.describe()}"

    def identity(self) -> dict[str, Any]:
        return {**self.inner.identity(), "vocab_alignment_sha256": self.alignment.sha256()}

    @property
    def has_features(self) -> bool:
        return False

    @property
    def module(self) -> Any:
        """The wrapped teacher's torch module (None for an ONNX teacher): its size and timing are its own."""
        return getattr(self.inner, "module", None)

    @property
    def reads_inputs(self) -> bool:
        return True

    def translate(self, ids: np.ndarray) -> np.ndarray:
        """The data's token ids as the teacher's ids of the same strings."""
        if ids.size and (ids.min() < 0 or ids.max() >= self.alignment.student_size):
            raise ConfigError(f"key '{KEY}': token ids outside the data tokenizer's {self.alignment.student_size}",
                              "check data.tokenizer")
        paired = np.zeros(self.alignment.student_size, dtype=bool)
        paired[self.alignment.student_ids] = True
        self.tally.unk_inputs += int((~paired[ids]).sum())
        mapped = self.alignment.to_teacher[ids]
        return np.where(mapped < 0, 0, mapped)  # no such string and no unk in the teacher's vocabulary: id 0 (counted)

    def logits(self, batch: Feed) -> np.ndarray:
        import torch

        if not isinstance(batch, dict) or "input_ids" not in batch:
            raise ConfigError(f"key '{KEY}': the teacher gets no input_ids", "vocabulary alignment is for causal-lm token data")
        fed = {**batch, "input_ids": self.translate(np.asarray(batch["input_ids"]))}
        raw = torch.from_numpy(np.asarray(self.inner.logits(fed), dtype=np.float32))
        mask = torch.as_tensor(np.asarray(batch.get("attention_mask", np.ones(raw.shape[:2])))) != 0
        self.tally.mass += float(dropped_mass(raw, self.alignment)[mask].sum())
        self.tally.tokens += int(mask.sum())
        return align_logits(raw, self.alignment).numpy()


def align_teacher(teacher: TeacherSource, teacher_tokenizer: Any, data_tokenizer: Any, loss_names: list[str],
                  task_name: str) -> AlignedTeacher:
    """`teacher` aligned to the data's vocabulary (transformers tokenizers of each), for causal-lm
    with losses that compare distributions on the shared tokens only (edgekd.distill.lm_losses)."""
    if task_name != "causal-lm":
        raise ConfigError(f"key '{KEY}': vocabulary alignment is for task causal-lm, not {task_name}",
                          "remove vocab_alignment, or use one tokenizer for teacher and data")
    other = sorted(set(loss_names) - set(LM_LOSSES) - {"ce"})
    if other:
        raise ConfigError(f"key '{KEY}': losses {', '.join(other)} read the whole teacher distribution; with aligned "
                          "vocabularies only tokens both sides have are compared", f"use {', '.join(LM_LOSSES)} (and ce)")
    alignment = build_alignment(data_tokenizer.get_vocab(), teacher_tokenizer.get_vocab(), special_ids(data_tokenizer),
                                special_ids(teacher_tokenizer), len(data_tokenizer), len(teacher_tokenizer))
    return AlignedTeacher(teacher, alignment)


def measure_dropped_mass(teacher: AlignedTeacher, batches: Iterable[dict[str, np.ndarray]]) -> MassTally:
    """The teacher's dropped mass (and unk substitutions) over `batches` alone, e.g. the eval feeds:
    a number that does not depend on whether this build filled the teacher-logit cache or read it."""
    measuring = AlignedTeacher(teacher.inner, teacher.alignment)
    for batch in batches:
        measuring.logits(batch)
    return measuring.tally


def aligned_source(ctx: Any, source: TeacherSource) -> TeacherSource:
    """[distill] vocab_alignment = "shared_tokens": the configured teacher (a [teacher.hf] folder
    with its own tokenizer) aligned to the data's tokenizer; the teacher unchanged otherwise."""
    cfg, spec = ctx.project.distill, ctx.project.teacher.hf
    if cfg.vocab_alignment != "shared_tokens":
        return source
    data_tokenizer = getattr(ctx.data_source, "tokenizer", None)
    if spec is None or spec.path is None or data_tokenizer is None:
        raise ConfigError(f"{ctx.source}: key '{KEY}': aligning vocabularies needs a teacher model folder with its own "
                          "tokenizer ([teacher.hf] path) and data tokenized by edgekd (data.tokenizer)",
                          "remove vocab_alignment, or give both")
    from transformers import AutoTokenizer

    folder = ctx.factory_of(ctx.project.teacher, "teacher")[1]["spec"]["path"]
    teacher_tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return align_teacher(source, teacher_tokenizer, data_tokenizer, [s.name for s in cfg.losses], ctx.task.name)
