"""edgekd.pipeline.evaluation.expected_top1_pt: without labels the x86 tuner checks the accuracy budget
on the top-1 accuracy a variant would score with the fp32 graph's softmax as the label distribution."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.pipeline.evaluation import agreement_pt, expected_top1_pt


def test_the_reference_scores_its_mean_top_probability() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.5, 0.1]])
    assert expected_top1_pt(probs, probs) == pytest.approx(60.0)  # (0.7 + 0.5) / 2; probabilities are taken as they are
    logits = np.log(probs)
    assert expected_top1_pt(logits, logits) == pytest.approx(60.0)  # logits: their softmax


def test_a_flip_between_near_ties_costs_little_and_a_confident_one_nearly_a_miss() -> None:
    near_tie = np.log(np.array([[0.334, 0.333, 0.333]] * 16))
    flipped = near_tie.copy()
    flipped[0] = np.log([0.333, 0.334, 0.333])  # one of 16 samples picks the runner-up
    assert agreement_pt(flipped, near_tie) == pytest.approx(93.75)  # a whole sample: 6.25 pt
    assert expected_top1_pt(near_tie, near_tie) - expected_top1_pt(flipped, near_tie) == pytest.approx(0.1 / 16, abs=1e-9)
    confident = np.log(np.array([[0.98, 0.01, 0.01]] * 16))
    wrong = confident.copy()
    wrong[0] = np.log([0.01, 0.98, 0.01])
    assert expected_top1_pt(confident, confident) - expected_top1_pt(wrong, confident) == pytest.approx(97.0 / 16)


def test_token_logits_are_scored_per_position() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5, 7))
    probs = np.exp(ref) / np.exp(ref).sum(-1, keepdims=True)
    assert expected_top1_pt(ref, ref) == pytest.approx(probs.max(-1).mean() * 100)
