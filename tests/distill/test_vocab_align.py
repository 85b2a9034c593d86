"""Vocabulary alignment (edgekd.distill.vocab_align): pairing two tokenizers trained here, the
teacher's inputs translated, its logits in the student's vocabulary, the dropped mass counted, and a
student distilled with gjsd through an aligned teacher."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from distill_data import LENGTH, VOCAB, TinyLM, TokenBlocks
from helpers import train_word_tokenizer

from edgekd.config.models import DistillConfig
from edgekd.data.load import as_source
from edgekd.distill.lm_losses import UNSCORED_LOGIT
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import TorchTeacher
from edgekd.distill.teaching import plan_teaching
from edgekd.distill.trainer import build_objective, distill
from edgekd.distill.vocab_align import (
    AlignedTeacher,
    align_teacher,
    build_alignment,
    measure_dropped_mass,
    normalise,
)
from edgekd.errors import ConfigError
from edgekd.tasks import get_task

STUDENT_TEXT = ["the cat sat on the mat", "a dog ran to the park", "the bird sang"]
TEACHER_TEXT = ["the cat ran home", "a bird flew over the park", "one fish swam", "the dog slept"]


def tokenizer(path: Path, texts: list[str], specials: tuple[str, str]):
    """A word-level tokenizer trained here on `texts`, with its own (pad, unk) spellings."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    pad, unk = specials
    if specials == ("[PAD]", "[UNK]"):
        train_word_tokenizer(texts, path)
    else:
        tok = Tokenizer(models.WordLevel(unk_token=unk))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[unk, pad]))
        tok.save(str(path))
    return PreTrainedTokenizerFast(tokenizer_file=str(path), pad_token=pad, unk_token=unk)


@pytest.fixture
def tokenizers(tmp_path):
    return (tokenizer(tmp_path / "student.json", STUDENT_TEXT, ("[PAD]", "[UNK]")),
            tokenizer(tmp_path / "teacher.json", TEACHER_TEXT, ("<pad>", "<unk>")))


class FixedTeacher:
    """A teacher that reads its inputs and answers fixed random logits [B, T, V]; keeps the ids it got."""

    reads_inputs = True

    def __init__(self, vocab: int, seed: int = 0) -> None:
        self.vocab, self.gen, self.fed = vocab, np.random.default_rng(seed), []

    def describe(self) -> str:
        return "fixed teacher"

    def identity(self) -> dict:
        return {"kind": "fixed"}

    def logits(self, batch: dict) -> np.ndarray:
        self.fed.append(np.array(batch["input_ids"]))
        return self.gen.standard_normal((*batch["input_ids"].shape, self.vocab)).astype(np.float32) * 3


def test_normalise_unifies_word_start_markers_and_byte_pieces() -> None:
    assert normalise("Ġcat") == normalise("▁cat") == " cat"
    assert normalise("<0x41>") == "A" and normalise("<0x0A>") == "<0x0A>"  # unprintable bytes keep their spelling
    pairs = build_alignment({"Ġcat": 0, "A": 1, "x": 2}, {"▁cat": 5, "<0x41>": 3, "y": 0}, {}, {})
    assert dict(zip(pairs.student_ids.tolist(), pairs.teacher_ids.tolist())) == {0: 5, 1: 3}


def test_shared_words_pair_by_string_and_specials_by_role(tokenizers) -> None:
    student, teacher = tokenizers
    align = align_teacher(FixedTeacher(len(teacher)), teacher, student, ["gjsd"], "causal-lm").alignment
    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    shared = (set(s_vocab) & set(t_vocab))
    assert shared and len(align.student_ids) == len(shared) + 2  # the words both have, pad and unk
    for word in shared:
        assert align.to_teacher[s_vocab[word]] == t_vocab[word]
    assert align.to_teacher[s_vocab["[PAD]"]] == t_vocab["<pad>"] and align.to_teacher[s_vocab["[UNK]"]] == t_vocab["<unk>"]
    for word in set(s_vocab) - set(t_vocab) - {"[PAD]", "[UNK]"}:
        assert align.to_teacher[s_vocab[word]] == t_vocab["<unk>"]  # the teacher reads a word it lacks as its unk
    assert len(set(align.teacher_ids.tolist())) == len(align.teacher_ids)  # one to one


def test_aligned_logits_and_the_dropped_mass_by_hand(tokenizers) -> None:
    student, teacher = tokenizers
    inner = FixedTeacher(len(teacher), seed=1)
    aligned = align_teacher(inner, teacher, student, ["gjsd", "ce"], "causal-lm")
    ids = np.array(student(["the cat sat on the mat", "the bird sang [PAD] [PAD] [PAD]"])["input_ids"])
    mask = (ids != student.pad_token_id).astype(np.int64)
    out = aligned.logits({"input_ids": ids, "attention_mask": mask})
    raw = FixedTeacher(len(teacher), seed=1).logits({"input_ids": ids})
    assert np.array_equal(inner.fed[0], aligned.alignment.to_teacher[ids])  # fed the teacher's ids of the same words
    align = aligned.alignment
    assert out.shape == (*ids.shape, len(student))
    unpaired = np.setdiff1d(np.arange(len(student)), align.student_ids)
    assert (out[..., unpaired] == UNSCORED_LOGIT).all() and (out[..., align.student_ids] > UNSCORED_LOGIT).all()
    p = np.exp(raw.astype(np.float64) - raw.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    kept = p[..., align.teacher_ids]
    torch.testing.assert_close(torch.from_numpy(out[..., align.student_ids]).double().softmax(-1),
                               torch.from_numpy(kept / kept.sum(-1, keepdims=True)), rtol=1e-5, atol=1e-7)  # renormalised
    expected = (1 - kept.sum(-1))[mask == 1].mean()
    assert aligned.tally.tokens == mask.sum() and aligned.tally.mean() == pytest.approx(expected, rel=1e-5)
    assert aligned.tally.unk_inputs == int(np.isin(ids, unpaired).sum())  # "sat", "on", "mat", "sang"
    again = measure_dropped_mass(aligned, [{"input_ids": ids, "attention_mask": mask}])
    assert again.tokens == mask.sum() and 0 < again.mean() < 1


def test_losses_that_read_the_whole_distribution_and_other_tasks_are_refused(tokenizers) -> None:
    student, teacher = tokenizers
    with pytest.raises(ConfigError, match="losses hinton read the whole teacher distribution"):
        align_teacher(FixedTeacher(len(teacher)), teacher, student, ["hinton"], "causal-lm")
    with pytest.raises(ConfigError, match="vocabulary alignment is for task causal-lm, not text-classification"):
        align_teacher(FixedTeacher(len(teacher)), teacher, student, ["gjsd"], "text-classification")


def test_a_teacher_with_another_vocabulary_teaches_through_the_alignment(tmp_path) -> None:
    """A student over VOCAB ids; a teacher whose vocabulary has 5 of them (other ids) and 4 of its own."""
    student_vocab = {f"w{i}": i for i in range(VOCAB)}
    teacher_vocab = {"w3": 0, "w1": 1, "x0": 2, "w7": 3, "x1": 4, "w0": 5, "x2": 6, "w9": 7, "x3": 8}
    alignment = build_alignment(student_vocab, teacher_vocab, {}, {})
    source = as_source({"train": TokenBlocks(12), "calib": TokenBlocks(3, 1), "test": TokenBlocks(3, 2)}, "token blocks")
    data = TrainData(source, get_task("causal-lm", vocab_size=VOCAB, max_length=LENGTH))
    teacher_task = get_task("causal-lm", vocab_size=len(teacher_vocab), max_length=LENGTH)
    teacher = AlignedTeacher(TorchTeacher(torch.nn.Sequential(), None, "t", task=teacher_task), alignment)
    teacher.inner.module = TeacherLM(len(teacher_vocab))
    cfg = DistillConfig(epochs=4, batch_size=4, lr=3e-2, losses=[{"name": "gjsd", "params": {"beta": 0.5, "temperature": 1.0}}],
                        vocab_alignment="shared_tokens", on_policy={"lmbda": 0.5, "prompt_tokens": 2, "max_new_tokens": 4})
    objective = build_objective(cfg)
    teaching = plan_teaching(teacher, data, objective, cfg, tmp_path)
    assert teaching.logits is not None and teaching.logits.shape == (12, LENGTH, VOCAB)
    assert (teaching.logits[..., [2, 4]] == UNSCORED_LOGIT).all()  # w2, w4: the teacher has no such token
    losses = distill(TinyLM(width=8, seed=2), data, cfg, objective, teaching)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert teacher.tally.tokens > 0 and 0 < teacher.tally.mean() < 1


class TeacherLM(torch.nn.Module):
    """Next-token logits over a teacher vocabulary of `vocab` tokens (embedding -> linear)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.embed, self.head = torch.nn.Embedding(vocab, 8), torch.nn.Linear(8, vocab)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids)) * 3


def test_check_tokenizer_allows_a_teacher_tokenizer_only_with_the_setting(tmp_path, tokenizers) -> None:
    from edgekd.distill.hf_models import check_tokenizer

    student, teacher = tokenizers
    folder = tmp_path / "teacher"
    teacher.save_pretrained(str(folder))
    spec = {"path": str(folder), "key": "teacher.hf"}
    with pytest.raises(ConfigError, match="differs from data.tokenizer") as info:
        check_tokenizer(spec, student.get_vocab(), "student.json")
    assert 'set [distill] vocab_alignment = "shared_tokens"' in info.value.one_line()  # the hint names the setting
    check_tokenizer(spec, student.get_vocab(), "student.json", alignment="shared_tokens")


def test_the_teacher_source_is_aligned_and_the_distill_stage_reports_the_dropped_mass(tmp_path, tokenizers) -> None:
    from types import SimpleNamespace

    from edgekd.distill.vocab_align import aligned_source as align_vocabularies
    from edgekd.graph.feeds import FeedSet
    from edgekd.stages.distill import alignment_report

    student, teacher = tokenizers
    folder = tmp_path / "teacher"
    teacher.save_pretrained(str(folder))
    ids = np.array(student(["the cat sat on the mat", "a dog ran to the park"])["input_ids"])
    feeds = FeedSet({"input_ids": ids, "attention_mask": np.ones_like(ids)}, None, "eval")
    cfg = DistillConfig(losses=[{"name": "gjsd"}], vocab_alignment="shared_tokens", batch_size=1)
    ctx = SimpleNamespace(project=SimpleNamespace(distill=cfg, teacher=SimpleNamespace(hf=SimpleNamespace(path="teacher"))),
                          data_source=SimpleNamespace(tokenizer=student), task=SimpleNamespace(name="causal-lm"),
                          factory_of=lambda spec, key: ("f", {"spec": {"path": str(folder)}}, key), eval_feeds=feeds, source="p.toml")
    inner = FixedTeacher(len(teacher))
    aligned = align_vocabularies(ctx, inner)  # type: ignore[arg-type]
    assert isinstance(aligned, AlignedTeacher) and aligned.inner is inner
    metrics, notes = alignment_report(ctx, aligned)  # type: ignore[arg-type]
    dropped = metrics["distill.teacher_dropped_mass"]
    assert dropped.method == "measured" and 0 < dropped.value < 1 and "over 12 eval tokens" in dropped.how
    assert "dropped teacher mass" in notes[0] and "4 input tokens fed as the teacher's unk" in dropped.how  # sat, on, mat, to
    ctx.project.distill = DistillConfig(losses=[{"name": "gjsd"}])
    assert align_vocabularies(ctx, inner) is inner and alignment_report(ctx, inner) == ({}, [])  # type: ignore[arg-type]
