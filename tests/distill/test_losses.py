"""edgekd/distill/losses.py hinton_kd."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from edgekd.distill.losses import hinton_kd  # noqa: E402


@pytest.fixture
def batch() -> tuple:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(16, 10, generator=gen)
    teacher = torch.randn(16, 10, generator=gen) * 3
    labels = torch.randint(0, 10, (16,), generator=gen)
    return student, teacher, labels


def kl_teacher_student(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T, mean over the batch, written out by hand."""
    p_t = torch.softmax(teacher / temperature, dim=-1)
    return (p_t * (torch.log(p_t) - torch.log_softmax(student / temperature, dim=-1))).sum(dim=-1).mean()


def test_alpha_zero_is_cross_entropy(batch: tuple) -> None:
    student, teacher, labels = batch
    loss = hinton_kd(student, teacher, labels, temperature=4.0, alpha=0.0)
    torch.testing.assert_close(loss, F.cross_entropy(student, labels))


def test_identical_logits_have_no_kd_term(batch: tuple) -> None:
    student, _, labels = batch
    assert hinton_kd(student, student.clone(), labels, temperature=4.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    mixed = hinton_kd(student, student.clone(), labels, temperature=4.0, alpha=0.3)
    torch.testing.assert_close(mixed, 0.7 * F.cross_entropy(student, labels))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 8.0])
def test_kd_term_is_t_squared_times_kl_teacher_to_student(batch: tuple, temperature: float) -> None:
    student, teacher, labels = batch
    loss = hinton_kd(student, teacher, labels, temperature=temperature, alpha=1.0)
    torch.testing.assert_close(loss, temperature**2 * kl_teacher_student(student, teacher, temperature))


def test_kl_direction_is_teacher_to_student(batch: tuple) -> None:
    student, teacher, labels = batch
    loss = hinton_kd(student, teacher, labels, temperature=2.0, alpha=1.0)
    reverse = 4.0 * kl_teacher_student(teacher, student, 2.0)  # KL(p_student || p_teacher)
    assert not torch.allclose(loss, reverse)


def test_loss_is_linear_in_alpha(batch: tuple) -> None:
    student, teacher, labels = batch
    soft = hinton_kd(student, teacher, labels, 3.0, 1.0)
    hard = hinton_kd(student, teacher, labels, 3.0, 0.0)
    torch.testing.assert_close(hinton_kd(student, teacher, labels, 3.0, 0.25), 0.25 * soft + 0.75 * hard)


def test_kd_term_is_nonnegative_and_positive_when_logits_differ(batch: tuple) -> None:
    student, teacher, labels = batch
    assert hinton_kd(student, teacher, labels, 4.0, 1.0).item() > 0.0


def test_t_squared_keeps_soft_gradients_on_scale() -> None:
    # With T^2 the soft-target gradient at high T approaches (z_s - z_t) / N_classes per logit
    # (Hinton et al. 2015, zero-mean logits); without it it would shrink like 1/T^2.
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(1, 10, generator=gen)
    teacher -= teacher.mean()
    base = torch.randn(1, 10, generator=gen)
    base -= base.mean()
    labels = torch.zeros(1, dtype=torch.long)
    grads = []
    for temperature in (20.0, 40.0):
        student = base.clone().requires_grad_(True)
        hinton_kd(student, teacher, labels, temperature, 1.0).backward()
        grads.append(student.grad.clone())
    expected = (base - teacher) / 10
    for grad in grads:
        torch.testing.assert_close(grad, expected, atol=5e-3, rtol=5e-2)


def test_gradient_reaches_student_logits(batch: tuple) -> None:
    student, teacher, labels = batch
    student = student.clone().requires_grad_(True)
    hinton_kd(student, teacher, labels, 4.0, 0.9).backward()
    assert student.grad is not None
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
