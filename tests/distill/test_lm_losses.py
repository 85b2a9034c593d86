"""Token-level LM losses (edgekd.distill.lm_losses): known values, GKD's beta limits, zero when the
distributions are equal, gradients, aligned (-inf) teacher columns, and TRL's generalized_jsd_loss."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgekd.distill.lm_losses import (
    UNSCORED_LOGIT,
    forward_kl,
    generalized_jsd,
    reverse_kl,
)
from edgekd.distill.losses import LossInputs, build_loss


def rows(seed: int = 0, n: int = 7, vocab: int = 11, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, vocab, generator=gen) * scale, torch.randn(n, vocab, generator=gen) * scale


def by_hand_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) of two probability rows, mean over rows, in float64 sums."""
    p, q = p.double(), q.double()
    return float((p * (p.log() - q.log())).sum(-1).mean())


def test_two_token_known_values() -> None:
    student = torch.log(torch.tensor([[0.5, 0.5]]))
    teacher = torch.log(torch.tensor([[0.9, 0.1]]))
    fwd = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    rev = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert forward_kl(student, teacher).item() == pytest.approx(fwd, rel=1e-5)
    assert reverse_kl(student, teacher).item() == pytest.approx(rev, rel=1e-5)
    m = [0.5 * 0.9 + 0.5 * 0.5, 0.5 * 0.1 + 0.5 * 0.5]  # beta = 0.5: the classic JSD
    jsd = 0.5 * sum(t * math.log(t / x) for t, x in zip((0.9, 0.1), m)) + 0.5 * sum(s * math.log(s / x) for s, x in zip((0.5, 0.5), m))
    assert generalized_jsd(student, teacher, beta=0.5).item() == pytest.approx(jsd, rel=1e-5)


def test_forward_and_reverse_kl_match_their_definitions_with_temperature() -> None:
    s, t = rows()
    for temp in (1.0, 2.5):
        p_s, p_t = F.softmax(s / temp, -1), F.softmax(t / temp, -1)
        assert forward_kl(s, t, temp).item() == pytest.approx(by_hand_kl(p_t, p_s), rel=1e-5)
        assert reverse_kl(s, t, temp).item() == pytest.approx(by_hand_kl(p_s, p_t), rel=1e-5)


def test_gjsd_limits_follow_trl_beta_convention() -> None:
    s, t = rows(1)
    assert generalized_jsd(s, t, beta=0.0).item() == pytest.approx(forward_kl(s, t).item(), rel=1e-6)
    assert generalized_jsd(s, t, beta=1.0).item() == pytest.approx(reverse_kl(s, t).item(), rel=1e-6)
    s64, t64 = s.double(), t.double()  # continuous limits: gjsd/beta -> forward KL, gjsd/(1-beta) -> reverse KL
    eps = 1e-5
    assert (generalized_jsd(s64, t64, beta=eps) / eps).item() == pytest.approx(forward_kl(s64, t64).item(), rel=1e-3)
    assert (generalized_jsd(s64, t64, beta=1 - eps) / eps).item() == pytest.approx(reverse_kl(s64, t64).item(), rel=1e-3)


@pytest.mark.parametrize("name,params", [("forward_kl", {}), ("reverse_kl", {}), ("gjsd", {"beta": 0.3}),
                                         ("gjsd", {"beta": 0.0}), ("gjsd", {"beta": 1.0})])
def test_zero_when_equal_positive_otherwise_and_gradients(name: str, params: dict) -> None:
    s, t = rows(2)
    loss = build_loss(name, params)
    assert loss.needs_teacher_logits()
    assert loss(LossInputs(t.clone(), t, torch.zeros(7, dtype=torch.long), {}, {})).abs().item() < 1e-6
    student = s.clone().requires_grad_(True)
    value = loss(LossInputs(student, t, torch.zeros(7, dtype=torch.long), {}, {}))
    assert value.item() > 1e-3
    value.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and torch.isfinite(student.grad).all()
    # a step against the gradient lowers the divergence
    lowered = loss(LossInputs((student - 0.05 * student.grad).detach(), t, torch.zeros(7, dtype=torch.long), {}, {}))
    assert lowered.item() < value.item()


def test_no_rows_gives_zero_with_a_gradient_path() -> None:
    student = torch.zeros(0, 5, requires_grad=True)
    value = generalized_jsd(student, torch.zeros(0, 5), beta=0.5)
    value.backward()
    assert value.item() == 0.0 and student.grad is not None


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("mark", [UNSCORED_LOGIT, float("-inf")])
def test_unscored_teacher_columns_leave_the_comparison(beta: float, mark: float) -> None:
    s, t = rows(3, vocab=9)
    keep = torch.tensor([0, 2, 3, 5, 8])
    aligned = torch.full_like(t, mark)
    aligned[:, keep] = t[:, keep]
    student = s.clone().requires_grad_(True)
    value = generalized_jsd(student, aligned, beta=beta)
    torch.testing.assert_close(value, generalized_jsd(s[:, keep], t[:, keep], beta=beta))
    value.backward()
    assert torch.isfinite(student.grad).all()
    dropped = [c for c in range(9) if c not in keep.tolist()]
    assert student.grad[:, dropped].abs().sum() == 0  # tokens the teacher cannot score get no KD gradient


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gjsd_equals_trl_generalized_jsd_loss(beta: float, temperature: float) -> None:
    gkd = pytest.importorskip("trl.experimental.gkd", reason="trl (the 'lm' extra) is not installed")
    gen = torch.Generator().manual_seed(4)
    student, teacher = torch.randn(2, 6, 13, generator=gen) * 3, torch.randn(2, 6, 13, generator=gen) * 3
    labels = torch.randint(0, 13, (2, 6), generator=gen)
    labels[0, :2] = -100  # unscored positions: TRL masks by labels, edgekd's kd_view drops those rows
    keep = labels != -100
    theirs = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(student[keep], teacher[keep], beta=beta, temperature=temperature)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_beta_out_of_range_is_a_config_error() -> None:
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="beta"):
        build_loss("gjsd", {"beta": 1.5})
