"""edgekd/distill/losses.py: hinton_kd, the registry, every registered loss, CombinedLoss."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

from edgekd.distill.losses import (  # noqa: E402
    LOSSES,
    CombinedLoss,
    DistillLoss,
    LossInputs,
    build_loss,
    hinton_kd,
    register,
)
from edgekd.errors import ConfigError  # noqa: E402


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


# ---- registry -----------------------------------------------------------------------------------

def test_registry_holds_the_documented_losses() -> None:
    assert {"ce", "kd", "hinton", "dkd", "fitnet", "at", "hidden_mse", "attention_kl"} <= set(LOSSES)
    assert all(cls.name == name for name, cls in LOSSES.items())


def test_duplicate_name_is_rejected() -> None:
    class Again(DistillLoss):
        name = "kd"

    with pytest.raises(ValueError, match="'kd' is already registered"):
        register(Again)
    assert LOSSES["kd"] is not Again


def test_class_without_name_is_rejected() -> None:
    class Nameless(DistillLoss):
        pass

    with pytest.raises(TypeError, match="name"):
        register(Nameless)


def test_unknown_name_lists_known_and_nearest() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("hintn", {}, key="edgekd.toml: distill.losses[0]")
    text = info.value.one_line()
    assert text.startswith("edgekd.toml: distill.losses[0]: unknown loss 'hintn'")
    assert "known: " + ", ".join(sorted(LOSSES)) in text
    assert "did you mean hinton" in text


@pytest.mark.parametrize("name, params, param", [
    ("kd", {"temprature": 2.0}, "temprature"),          # unknown key
    ("kd", {"temperature": 0.0}, "temperature"),        # out of range
    ("hinton", {"alpha": 1.5}, "alpha"),
    ("dkd", {"beta": "eight"}, "beta"),                # wrong type
    ("fitnet", {"student_layer": "3"}, "teacher_layer"),  # missing required
    ("at", {"pairs": []}, "pairs"),
    ("ce", {"temperature": 4.0}, "temperature"),       # a loss without params
])
def test_bad_params_name_the_param(name: str, params: dict, param: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_loss(name, params)
    assert f"loss '{name}' param '{param}'" in str(info.value)
    assert "\n" not in info.value.one_line()
    assert info.value.hint and name in info.value.hint


def test_params_hint_lists_defaults() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("dkd", {"gamma": 1.0})
    assert info.value.hint == ("params of 'dkd': alpha (default 1.0), beta (default 8.0), temperature (default 4.0), "
                               "warmup_epochs (default 0.0)")


def test_build_loss_applies_params() -> None:
    loss = build_loss("hinton", {"temperature": 2, "alpha": 0.5})
    assert (loss.cfg.temperature, loss.cfg.alpha) == (2.0, 0.5)
    assert "temperature=2.0" in repr(loss)


# ---- every registered loss on tiny inputs ----------------------------------------------------------

EXAMPLE_PARAMS = {
    "ce": {}, "kd": {}, "hinton": {}, "dkd": {}, "forward_kl": {}, "reverse_kl": {}, "gjsd": {"beta": 0.5}, "topk_kd": {},
    "fitnet": {"student_layer": "s1", "teacher_layer": "t1"},
    "at": {"pairs": [["s1", "t1"], ["s2", "t2"]]},
    "hidden_mse": {"pairs": [["tok", "ttok"], ["pool", "tpool"]]},  # token states [B, T, H] and pooled [B, H]
    "attention_kl": {"pairs": [["sa", "ta"]], "heads": 2},
}


def tiny_inputs(requires_grad: bool = True) -> LossInputs:
    gen = torch.Generator().manual_seed(3)
    student = {"s1": torch.randn(4, 3, 6, 6, generator=gen), "s2": torch.randn(4, 5, 4, 4, generator=gen)}
    teacher = {"t1": torch.randn(4, 8, 6, 6, generator=gen), "t2": torch.randn(4, 16, 8, 8, generator=gen)}
    logits = torch.randn(4, 10, generator=gen), torch.randn(4, 10, generator=gen) * 2
    # transformer features: token states [B, T, H], query/key projections of attention modules "sa", "ta"
    student |= {"tok": torch.randn(4, 5, 6, generator=gen), "sa.query": torch.randn(4, 5, 4, generator=gen),
                "sa.key": torch.randn(4, 5, 4, generator=gen)}
    teacher |= {"ttok": torch.randn(4, 5, 12, generator=gen), "ta.query": torch.randn(4, 5, 8, generator=gen),
                "ta.key": torch.randn(4, 5, 8, generator=gen)}
    student["pool"], teacher["tpool"] = torch.randn(4, 6, generator=gen), torch.randn(4, 12, generator=gen)  # pooled [B, H]
    for tensor in student.values():
        tensor.requires_grad_(requires_grad)
    return LossInputs(logits[0].requires_grad_(requires_grad), logits[1], torch.tensor([0, 3, 9, 3]), student, teacher)


def test_example_params_cover_every_registered_loss() -> None:
    assert set(EXAMPLE_PARAMS) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_gives_a_finite_scalar_with_gradients_to_the_student(name: str) -> None:
    loss = build_loss(name, EXAMPLE_PARAMS[name])
    inputs = tiny_inputs()
    loss.setup(inputs.student_features, inputs.teacher_features)
    value = loss(inputs)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    grads = [inputs.student_logits.grad] + [inputs.student_features[k].grad for k in loss.student_layers()]
    touched = [g for g in grads if g is not None and g.abs().sum() > 0]
    assert touched, f"{name}: no gradient reached the student"
    for param in loss.parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_declared_needs_match_what_forward_reads(name: str) -> None:
    loss = build_loss(name, EXAMPLE_PARAMS[name])
    full = tiny_inputs(requires_grad=False)
    loss.setup(full.student_features, full.teacher_features)
    needed = LossInputs(full.student_logits, full.teacher_logits if loss.needs_teacher_logits() else None, full.labels,
                        {k: full.student_features[k] for k in loss.student_layers()},
                        {k: full.teacher_features[k] for k in loss.teacher_layers()})
    torch.testing.assert_close(loss(needed), loss(full))


def test_missing_teacher_logits_is_reported() -> None:
    inputs = tiny_inputs()
    inputs.teacher_logits = None
    with pytest.raises(ValueError, match="loss 'kd' needs teacher logits"):
        build_loss("kd", {})(inputs)


# ---- logit losses ---------------------------------------------------------------------------------

def test_ce_is_cross_entropy(batch: tuple) -> None:
    student, teacher, labels = batch
    torch.testing.assert_close(build_loss("ce")(LossInputs(student, teacher, labels, {}, {})),
                               F.cross_entropy(student, labels))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_is_t_squared_kl(batch: tuple, temperature: float) -> None:
    student, teacher, labels = batch
    value = build_loss("kd", {"temperature": temperature})(LossInputs(student, teacher, labels, {}, {}))
    torch.testing.assert_close(value, temperature**2 * kl_teacher_student(student, teacher, temperature))


def test_hinton_is_the_kd_ce_mix_and_matches_hinton_kd(batch: tuple) -> None:
    student, teacher, labels = batch
    inputs = LossInputs(student, teacher, labels, {}, {})
    mix = build_loss("hinton", {"temperature": 3.0, "alpha": 0.7})(inputs)
    kd = build_loss("kd", {"temperature": 3.0})(inputs)
    ce = build_loss("ce")(inputs)
    torch.testing.assert_close(mix, 0.7 * kd + 0.3 * ce)
    torch.testing.assert_close(mix, hinton_kd(student, teacher, labels, 3.0, 0.7))


def dkd_direct(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
               alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """DKD written from the paper (Zhao et al. 2022, eqs. 1-5), sample by sample: TCKD is the KL of
    the binary [p_gt, 1 - p_gt]; NCKD is the KL of the softmax over the non-target logits only."""
    total = torch.zeros(())
    for s, t, y in zip(student / temperature, teacher / temperature, labels):
        p_s, p_t = torch.softmax(s, -1), torch.softmax(t, -1)
        b_s = torch.stack((p_s[y], 1 - p_s[y]))
        b_t = torch.stack((p_t[y], 1 - p_t[y]))
        tckd = (b_t * (b_t.log() - b_s.log())).sum()
        keep = torch.arange(len(s)) != y
        q_s, q_t = torch.softmax(s[keep], -1), torch.softmax(t[keep], -1)
        nckd = (q_t * (q_t.log() - q_s.log())).sum()
        total = total + temperature**2 * (alpha * tckd + beta * nckd)
    return total / len(labels)


@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.0, 2.0)])
def test_dkd_matches_the_paper_formula(batch: tuple, alpha: float, beta: float, temperature: float) -> None:
    student, teacher, labels = batch
    value = build_loss("dkd", {"alpha": alpha, "beta": beta, "temperature": temperature})(
        LossInputs(student, teacher, labels, {}, {}))
    torch.testing.assert_close(value, dkd_direct(student, teacher, labels, alpha, beta, temperature))


def test_dkd_reformulates_kd_per_sample(batch: tuple) -> None:
    # Zhao et al. 2022, eq. 7: KD = TCKD + (1 - p_gt^teacher) * NCKD.
    student, teacher, labels = batch
    for i in range(3):
        s, t, y = student[i:i + 1], teacher[i:i + 1], labels[i:i + 1]
        p_gt = torch.softmax(t / 2.0, -1)[0, y].item()
        dkd = build_loss("dkd", {"alpha": 1.0, "beta": 1.0 - p_gt, "temperature": 2.0})(LossInputs(s, t, y, {}, {}))
        torch.testing.assert_close(dkd, build_loss("kd", {"temperature": 2.0})(LossInputs(s, t, y, {}, {})))


def test_dkd_is_zero_for_identical_logits(batch: tuple) -> None:
    student, _, labels = batch
    value = build_loss("dkd")(LossInputs(student, student.clone(), labels, {}, {}))
    assert value.item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("epoch, factor", [(0.0, 0.0), (0.5, 0.25), (1.0, 0.5), (2.0, 1.0), (7.5, 1.0)])
def test_dkd_warmup_ramps_the_term_linearly(batch: tuple, epoch: float, factor: float) -> None:
    student, teacher, labels = batch
    full = build_loss("dkd")(LossInputs(student, teacher, labels, {}, {}, epoch))
    ramped = build_loss("dkd", {"warmup_epochs": 2.0})(LossInputs(student, teacher, labels, {}, {}, epoch))
    torch.testing.assert_close(ramped, factor * full)


def test_dkd_without_warmup_ignores_the_epoch(batch: tuple) -> None:
    student, teacher, labels = batch
    loss = build_loss("dkd")
    torch.testing.assert_close(loss(LossInputs(student, teacher, labels, {}, {}, 0.0)),
                               loss(LossInputs(student, teacher, labels, {}, {}, 3.0)))


# ---- feature losses -------------------------------------------------------------------------------

def feats(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    return dict(tensors)


def test_fitnet_projector_is_made_by_setup_and_trained_with_the_student() -> None:
    loss = build_loss("fitnet", {"student_layer": "s", "teacher_layer": "t"})
    combined = CombinedLoss([(1.0, loss)])
    assert list(combined.parameters()) == []
    s, t = torch.randn(2, 3, 4, 4, requires_grad=True), torch.randn(2, 8, 4, 4)
    combined.setup(feats(s=s.detach()), feats(t=t))
    assert isinstance(loss.projector, nn.Conv2d) and loss.projector.weight.shape == (8, 3, 1, 1)
    projector = loss.projector
    combined.setup(feats(s=s.detach()), feats(t=t))  # idempotent: the optimizer keeps its params
    assert loss.projector is projector
    params = list(combined.parameters())
    assert len(params) == 2
    total, _ = combined(LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s=s), feats(t=t)))
    torch.testing.assert_close(total, F.mse_loss(projector(s), t))
    total.backward()
    assert s.grad is not None and all(p.grad is not None for p in params)


def test_fitnet_linear_projector_for_2d_features() -> None:
    loss = build_loss("fitnet", {"student_layer": "s", "teacher_layer": "t"})
    loss.setup(feats(s=torch.randn(2, 5)), feats(t=torch.randn(2, 7)))
    assert isinstance(loss.projector, nn.Linear) and (loss.projector.in_features, loss.projector.out_features) == (5, 7)


def test_fitnet_pools_the_larger_map() -> None:
    loss = build_loss("fitnet", {"student_layer": "s", "teacher_layer": "t"})
    s, t = torch.randn(2, 3, 8, 8), torch.randn(2, 6, 4, 4)
    loss.setup(feats(s=s), feats(t=t))
    value = loss(LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s=s), feats(t=t)))
    torch.testing.assert_close(value, F.mse_loss(loss.projector(F.avg_pool2d(s, 2)), t))


def test_fitnet_forward_before_setup_is_a_trainer_error() -> None:
    loss = build_loss("fitnet", {"student_layer": "s", "teacher_layer": "t"})
    with pytest.raises(RuntimeError, match="setup"):
        loss(tiny_inputs())


def test_fitnet_rank_mismatch_names_both_layers() -> None:
    loss = build_loss("fitnet", {"student_layer": "s", "teacher_layer": "t"}, key="distill.losses[2]")
    with pytest.raises(ConfigError, match=r"distill.losses\[2\]: loss 'fitnet': student_layer 's' gives \[2, 3, 4, 4\] and teacher_layer 't'"):
        loss.setup(feats(s=torch.randn(2, 3, 4, 4)), feats(t=torch.randn(2, 7)))


def test_at_is_zero_for_equal_maps_and_ignores_scale_and_channels() -> None:
    loss = build_loss("at", {"pairs": [["s", "t"]]})
    a = torch.randn(2, 3, 5, 5)
    same = LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s=a), feats(t=a.clone()))
    assert loss(same).item() == pytest.approx(0.0, abs=1e-6)
    wider = torch.cat([a, a], dim=1) * 5.0  # same attention map up to scale
    scaled = LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s=a), feats(t=wider))
    assert loss(scaled).item() == pytest.approx(0.0, abs=1e-6)


def test_at_matches_the_paper_formula_and_averages_pairs() -> None:
    gen = torch.Generator().manual_seed(5)
    s1, t1 = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 9, 4, 4, generator=gen)
    s2, t2 = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 9, 8, 8, generator=gen)

    def at_pair(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q_s, q_t = s.pow(2).mean(1, keepdim=True), t.pow(2).mean(1, keepdim=True)
        if q_s.shape != q_t.shape:
            q_s = F.interpolate(q_s, size=q_t.shape[-2:], mode="bilinear", align_corners=False)
        q_s, q_t = q_s.flatten(1), q_t.flatten(1)
        return (q_s / q_s.norm(dim=1, keepdim=True) - q_t / q_t.norm(dim=1, keepdim=True)).norm(dim=1).mean()

    loss = build_loss("at", {"pairs": [["s1", "t1"], ["s2", "t2"]]})
    value = loss(LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s1=s1, s2=s2), feats(t1=t1, t2=t2)))
    torch.testing.assert_close(value, (at_pair(s1, t1) + at_pair(s2, t2)) / 2)


def test_at_rejects_non_spatial_features() -> None:
    loss = build_loss("at", {"pairs": [["s", "t"]]})
    with pytest.raises(ConfigError, match="layer 's' gives \\[2, 5\\], not \\[B, C, H, W\\]"):
        loss(LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), feats(s=torch.randn(2, 5)), feats(t=torch.randn(2, 3, 4, 4))))


def test_missing_feature_is_reported() -> None:
    loss = build_loss("at", {"pairs": [["s", "t"]]})
    with pytest.raises(ValueError, match="student feature 's' was not captured"):
        loss(LossInputs(torch.zeros(2, 4), None, torch.zeros(2, dtype=torch.long), {}, feats(t=torch.randn(2, 3, 4, 4))))


# ---- CombinedLoss ---------------------------------------------------------------------------------

def test_combined_loss_weights_terms_and_reports_each() -> None:
    inputs = tiny_inputs()
    kd, ce, at = build_loss("kd"), build_loss("ce"), build_loss("at", EXAMPLE_PARAMS["at"])
    combined = CombinedLoss([(0.5, kd), (2.0, ce), (10.0, at)])
    total, parts = combined(inputs)
    assert list(parts) == ["kd", "ce", "at"]
    torch.testing.assert_close(total, 0.5 * kd(inputs) + 2.0 * ce(inputs) + 10.0 * at(inputs))
    torch.testing.assert_close(parts["ce"], ce(inputs).detach())
    assert not any(v.requires_grad for v in parts.values())
    assert combined.needs_teacher_logits()
    assert combined.student_layers() == ["s1", "s2"] and combined.teacher_layers() == ["t1", "t2"]


def test_combined_loss_labels_repeated_names_and_unions_layers() -> None:
    first = build_loss("fitnet", {"student_layer": "a", "teacher_layer": "x"})
    second = build_loss("fitnet", {"student_layer": "b", "teacher_layer": "x"})
    combined = CombinedLoss([(1.0, first), (1.0, second), (1.0, build_loss("ce"))])
    assert combined.labels == ["fitnet", "fitnet.2", "ce"]
    assert combined.student_layers() == ["a", "b"] and combined.teacher_layers() == ["x"]
    assert not combined.needs_teacher_logits()


@pytest.mark.parametrize("terms", [[], [(-1.0, "ce")], [(float("nan"), "ce")], [(float("inf"), "ce")]])
def test_combined_loss_rejects_empty_and_bad_weights(terms: list) -> None:
    with pytest.raises(ConfigError, match="distill.losses"):
        CombinedLoss([(w, build_loss(name)) for w, name in terms])
