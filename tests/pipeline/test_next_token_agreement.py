"""Next-token agreement with the teacher (edgekd/pipeline/evaluation.py, edgekd/stages/evaluate.py):
the share of scored positions (those that predict a real next token: causal-lm's rows_and_targets)
where a model's top-1 next token is the teacher's; "not available" with the reason where the teacher
cannot be asked or its positions do not line up."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgekd.graph.feeds import FeedSet
from edgekd.pipeline.evaluation import (
    TeacherTop1,
    next_token_agreement,
    scored_top1,
    scores_next_tokens,
)
from edgekd.stages.evaluate import NO_TEST_LOGITS, why_no_teacher
from edgekd.tasks.causal_lm import CausalLM

VOCAB, LENGTH = 11, 6


@pytest.fixture
def lm() -> tuple[CausalLM, FeedSet, np.ndarray]:
    """A task, 5 sequences (the last two padded after 3 tokens) and random logits for them."""
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (5, LENGTH)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[3:, 3:] = 0
    feeds = FeedSet({"input_ids": ids, "attention_mask": mask}, None, "5 test sequences")
    return CausalLM(vocab_size=VOCAB, max_length=LENGTH), feeds, rng.standard_normal((5, LENGTH, VOCAB)).astype(np.float32)


def test_scored_positions_skip_padding_and_the_last_token(lm) -> None:
    task, feeds, logits = lm
    top1 = scored_top1(task, feeds, logits)
    assert top1.shape == (3 * (LENGTH - 1) + 2 * 2,)  # full rows: T-1 positions; padded rows: 3 real tokens, 2 next-token pairs
    assert np.array_equal(top1[:LENGTH - 1], logits[0, :-1].argmax(-1))


def test_agreement_counts_matching_top1(lm) -> None:
    task, feeds, logits = lm
    teacher = TeacherTop1(scored_top1(task, feeds, logits), "a test teacher")
    same = next_token_agreement(task, feeds, logits, teacher, "the engine", "here")
    assert (same.value, same.method, same.unit) == (100.0, "measured", "%") and "19 scored positions" in same.how
    changed = logits.copy()
    changed[0, 0] = 0.0
    changed[0, 0, (logits[0, 0].argmax() + 1) % VOCAB] = 100.0  # one scored position now predicts another token
    assert next_token_agreement(task, feeds, changed, teacher, "the engine", "here").value == pytest.approx(100.0 * 18 / 19)
    padded = logits.copy()
    padded[4, 4] = -padded[4, 4]  # a padded position: not scored, agreement unchanged
    assert next_token_agreement(task, feeds, padded, teacher, "the engine", "here").value == 100.0


def test_not_available_says_why(lm) -> None:
    task, feeds, logits = lm
    missing = next_token_agreement(task, feeds, logits, TeacherTop1(None, "no teacher to compare with: reasons"), "x", "here")
    assert (missing.value, missing.method, missing.how) == (None, "not available", "no teacher to compare with: reasons")
    short = TeacherTop1(np.zeros(4, np.int64), "a teacher with its own tokenizer")
    assert "do not line up" in next_token_agreement(task, feeds, logits, short, "x", "here").how


def test_which_teachers_can_be_asked() -> None:
    def ctx(kind: str, members: tuple[str, ...] = (), distills: bool = True) -> SimpleNamespace:
        teacher = SimpleNamespace(kind=kind, members=[SimpleNamespace(kind=k) for k in members])
        return SimpleNamespace(distills=distills, project=SimpleNamespace(teacher=teacher))

    assert why_no_teacher(ctx("torch")) is None and why_no_teacher(ctx("onnx")) is None
    assert why_no_teacher(ctx("logits")) == NO_TEST_LOGITS["logits"]
    assert "API" in why_no_teacher(ctx("api"))
    assert why_no_teacher(ctx("ensemble", ("torch", "logits"))) == NO_TEST_LOGITS["logits"]
    assert "edgekd compile" in why_no_teacher(ctx("torch", distills=False))
    assert scores_next_tokens(CausalLM(vocab_size=VOCAB, max_length=LENGTH)) and not scores_next_tokens(None)
