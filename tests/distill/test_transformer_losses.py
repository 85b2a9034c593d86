"""edgekd/distill/transformer_losses.py: 'hidden_mse' (TinyBERT) and 'attention_kl' (MiniLM/MiniLMv2)
on tiny BERT models built from configs with random weights (nothing is downloaded)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from edgekd.config.models import DistillConfig
from edgekd.data.load import as_source
from edgekd.distill.features import FeatureCapture
from edgekd.distill.losses import (
    LOSSES,
    CombinedLoss,
    DistillLoss,
    LossInputs,
    build_loss,
)
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import TorchTeacher
from edgekd.distill.teaching import Teaching, plan_teaching
from edgekd.distill.trainer import build_objective, distill
from edgekd.distill.transformer_losses import attention_log_probs
from edgekd.errors import ConfigError
from edgekd.tasks import get_task

transformers = pytest.importorskip("transformers")

VOCAB, LENGTH, CLASSES = 100, 10, 3
LAYERS = ["bert.embeddings", "bert.encoder.layer.0", "bert.encoder.layer.1"]
HIDDEN_PAIRS = [[layer, layer] for layer in LAYERS]
ATTENTION = [f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
ATTENTION_PAIRS = [[a, a] for a in ATTENTION]


def bert(hidden: int = 32, heads: int = 4, seed: int = 0, eager: bool = False) -> torch.nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    extra = {"attn_implementation": "eager"} if eager else {}
    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=2 * hidden,
        max_position_embeddings=32, num_labels=CLASSES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        **extra)).eval()


def token_batch(length: int = LENGTH, seed: int = 0) -> dict[str, torch.Tensor]:
    """Four sequences; rows 1 and 3 end in padding (mask 0, token id 0)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (4, length), generator=gen)
    mask = torch.ones(4, length, dtype=torch.int64)
    mask[1, length - 3:] = 0
    mask[3, length // 2:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def repadded(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with other token ids at the padded positions."""
    other = torch.randint(1, VOCAB, batch["input_ids"].shape, generator=torch.Generator().manual_seed(9))
    mask = batch["attention_mask"]
    return {"input_ids": torch.where(mask.bool(), batch["input_ids"], other), "attention_mask": mask}


def captured(model: torch.nn.Module, layers: list[str], batch: dict[str, torch.Tensor],
             grad: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    with FeatureCapture(model, layers) as cap, torch.set_grad_enabled(grad):
        logits = model(**batch).logits
    return logits, dict(cap.features)


def loss_inputs(loss: DistillLoss, student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
                teacher_batch: dict[str, torch.Tensor] | None = None, mask: bool = True) -> LossInputs:
    """Student with gradients and teacher without, as the trainer runs them; the student's mask."""
    s_logits, s_feats = captured(student, loss.student_layers(), batch, grad=True)
    t_logits, t_feats = captured(teacher, loss.teacher_layers(), teacher_batch or batch, grad=False)
    return LossInputs(s_logits, t_logits, torch.zeros(len(s_logits), dtype=torch.int64), s_feats, t_feats,
                      attention_mask=batch["attention_mask"] if mask else None)


def value_of(loss: DistillLoss, student: torch.nn.Module, teacher: torch.nn.Module, batch: dict[str, torch.Tensor],
             mask: bool = True) -> torch.Tensor:
    inputs = loss_inputs(loss, student, teacher, batch, mask=mask)
    loss.setup(inputs.student_features, inputs.teacher_features)
    return loss(inputs)


def identity_projections(loss: DistillLoss) -> None:
    with torch.no_grad():
        for projection in loss.projections:
            projection.weight.copy_(torch.eye(*projection.weight.shape))
            projection.bias.zero_()


def test_both_losses_are_registered_and_their_params_checked() -> None:
    assert {"hidden_mse", "attention_kl"} <= set(LOSSES)
    with pytest.raises(ConfigError) as info:
        build_loss("attention_kl", {"pairs": ATTENTION_PAIRS})
    assert "param 'heads': Field required" in str(info.value) and "heads (required)" in info.value.hint
    with pytest.raises(ConfigError, match="param 'pairs'"):
        build_loss("hidden_mse", {"pairs": []})
    loss = build_loss("attention_kl", {"pairs": [["s", "t"]], "heads": 2, "query": "q_lin", "key": "k_lin"})
    assert loss.student_layers() == ["s.q_lin", "s.k_lin"] and loss.teacher_layers() == ["t.q_lin", "t.k_lin"]


def test_a_bert_layer_is_captured_as_its_hidden_state() -> None:
    model, batch = bert(), token_batch()
    with FeatureCapture(model, LAYERS) as cap, torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    for i, layer in enumerate(LAYERS):
        torch.testing.assert_close(cap.features[layer], out.hidden_states[i])


# ---- hidden_mse -------------------------------------------------------------------------------------

def test_hidden_mse_is_zero_for_the_same_model_with_identity_projections() -> None:
    model = bert()
    loss = build_loss("hidden_mse", {"pairs": HIDDEN_PAIRS})
    inputs = loss_inputs(loss, model, copy.deepcopy(model), token_batch())
    loss.setup(inputs.student_features, inputs.teacher_features)
    identity_projections(loss)
    assert loss(inputs).item() == pytest.approx(0.0, abs=1e-10)


def test_hidden_mse_trains_the_student_and_one_projection_per_pair() -> None:
    student, teacher = bert(hidden=16, heads=2, seed=1), bert(seed=2)
    loss = build_loss("hidden_mse", {"pairs": HIDDEN_PAIRS})
    value = value_of(loss, student, teacher, token_batch())
    assert [tuple(p.weight.shape) for p in loss.projections] == [(32, 16)] * 3
    assert value.dim() == 0 and value.item() > 0
    value.backward()
    for param in [student.bert.embeddings.word_embeddings.weight, student.bert.encoder.layer[1].output.dense.weight,
                  *loss.parameters()]:
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_hidden_mse_averages_the_kept_tokens_of_each_pair() -> None:
    student, teacher, batch = bert(hidden=16, heads=2, seed=1), bert(seed=2), token_batch()
    loss = build_loss("hidden_mse", {"pairs": HIDDEN_PAIRS})
    inputs = loss_inputs(loss, student, teacher, batch)
    loss.setup(inputs.student_features, inputs.teacher_features)
    keep = batch["attention_mask"].bool()
    expected = torch.stack([
        (projection(inputs.student_features[layer]) - inputs.teacher_features[layer])[keep].pow(2).mean()
        for layer, projection in zip(LAYERS, loss.projections)]).mean()
    torch.testing.assert_close(loss(inputs), expected)


@pytest.mark.parametrize(("name", "params"), [("hidden_mse", {"pairs": HIDDEN_PAIRS}),
                                              ("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 2})])
def test_padded_positions_do_not_change_the_value(name: str, params: dict) -> None:
    student, teacher, batch = bert(hidden=16, heads=2, seed=1), bert(seed=2), token_batch()
    loss = build_loss(name, params)
    value = value_of(loss, student, teacher, batch)
    _, before = captured(student, loss.student_layers(), batch, grad=False)
    _, after = captured(student, loss.student_layers(), repadded(batch), grad=False)
    assert any(not torch.allclose(before[k], after[k]) for k in before)  # the padded rows did change
    torch.testing.assert_close(value_of(loss, student, teacher, repadded(batch)), value)
    unmasked = value_of(loss, student, teacher, batch, mask=False)
    assert not torch.allclose(value_of(loss, student, teacher, repadded(batch), mask=False), unmasked)


def test_pooled_features_pair_even_when_the_models_read_different_tokens() -> None:
    student, teacher = bert(hidden=16, heads=2, seed=1), bert(seed=2)
    loss = build_loss("hidden_mse", {"pairs": [["bert.pooler", "bert.pooler"]]})
    inputs = loss_inputs(loss, student, teacher, token_batch(), teacher_batch=token_batch(length=14, seed=3))
    loss.setup(inputs.student_features, inputs.teacher_features)
    value = loss(inputs)
    assert value.item() > 0
    value.backward()
    assert student.bert.pooler.dense.weight.grad is not None


def test_token_states_of_different_sequences_are_refused_with_a_pooled_hint() -> None:
    student, teacher = bert(hidden=16, heads=2, seed=1), bert(seed=2)
    for name, params in [("hidden_mse", {"pairs": HIDDEN_PAIRS}), ("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 2})]:
        loss = build_loss(name, params, key="distill.losses[1]")
        inputs = loss_inputs(loss, student, teacher, token_batch(), teacher_batch=token_batch(length=14, seed=3))
        with pytest.raises(ConfigError, match=r"distill.losses\[1\]: loss '.*': student '.*' gives \[4, 10, 16\] and teacher "
                                              r"'.*' gives \[4, 14, 32\]") as info:
            loss.setup(inputs.student_features, inputs.teacher_features)
        assert "pooled" in info.value.hint and "\n" not in info.value.one_line()


def test_token_states_paired_with_pooled_ones_are_a_config_error() -> None:
    loss = build_loss("hidden_mse", {"pairs": [["bert.encoder.layer.1", "bert.pooler"]]})
    inputs = loss_inputs(loss, bert(hidden=16, heads=2, seed=1), bert(seed=2), token_batch())
    with pytest.raises(ConfigError, match=r"gives \[4, 10, 16\] and teacher 'bert.pooler' gives \[4, 32\]; hidden_mse needs"):
        loss.setup(inputs.student_features, inputs.teacher_features)


def test_a_layer_that_does_not_exist_is_a_config_error_naming_it() -> None:
    loss = build_loss("hidden_mse", {"pairs": [["bert.encoder.layer.7", "bert.encoder.layer.1"]]})
    with pytest.raises(ConfigError, match="student has no submodule 'bert.encoder.layer.7'"):
        FeatureCapture(bert(), loss.student_layers(), source="student")
    bad_child = build_loss("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 2, "query": "q_lin", "key": "k_lin"})
    with pytest.raises(ConfigError, match=r"no submodule 'bert.encoder.layer.0.attention.self.q_lin' \(closest: "):
        FeatureCapture(bert(), bad_child.student_layers(), source="student")


# ---- attention_kl -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1])
def test_attention_from_q_and_k_is_the_models_own_eager_attention(layer: int) -> None:
    model, batch = bert(eager=True), token_batch()
    path = ATTENTION[layer]
    with FeatureCapture(model, [f"{path}.query", f"{path}.key"]) as cap, torch.no_grad():
        out = model(**batch, output_attentions=True)
    probs = attention_log_probs(cap.features[f"{path}.query"], cap.features[f"{path}.key"], 4, batch["attention_mask"]).exp()
    torch.testing.assert_close(probs, out.attentions[layer], atol=1e-6, rtol=1e-5)
    assert torch.all(probs[1, :, :, LENGTH - 3:] == 0)  # padded keys get no probability


def test_attention_kl_is_the_kl_of_the_models_attention_maps() -> None:
    student, teacher, batch = bert(hidden=16, heads=4, seed=1, eager=True), bert(seed=2, eager=True), token_batch()
    loss = build_loss("attention_kl", {"pairs": [[ATTENTION[0], ATTENTION[1]]], "heads": 4})
    value = value_of(loss, student, teacher, batch)
    with torch.no_grad():
        a_s = student(**batch, output_attentions=True).attentions[0]
        a_t = teacher(**batch, output_attentions=True).attentions[1]
    terms = []
    for row, mask in enumerate(batch["attention_mask"]):
        keys = mask.bool()
        for query in torch.nonzero(keys).flatten():
            p_t, p_s = a_t[row, :, query, keys], a_s[row, :, query, keys]  # [heads, kept keys]
            terms.append((p_t * (p_t.log() - p_s.log())).sum(-1).mean())
    torch.testing.assert_close(value.detach(), torch.stack(terms).mean(), atol=1e-6, rtol=1e-4)


def test_attention_kl_is_zero_for_the_same_model_and_trains_only_q_and_k() -> None:
    model = bert()
    loss = build_loss("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 4})
    assert value_of(loss, model, copy.deepcopy(model), token_batch()).item() == pytest.approx(0.0, abs=1e-10)
    student = bert(hidden=16, heads=2, seed=1)  # 2 attention heads; the teacher has 4; 2 relation heads
    loss = build_loss("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 2})
    value = value_of(loss, student, bert(seed=2), token_batch())
    assert value.item() > 0 and not list(loss.parameters())
    value.backward()
    attention = student.bert.encoder.layer[1].attention.self
    assert attention.query.weight.grad.abs().sum() > 0 and attention.key.weight.grad.abs().sum() > 0
    assert attention.value.weight.grad is None  # the maps come from Q and K only


def test_heads_that_do_not_divide_the_width_is_a_config_error() -> None:
    loss = build_loss("attention_kl", {"pairs": ATTENTION_PAIRS, "heads": 3})
    inputs = loss_inputs(loss, bert(hidden=16, heads=2, seed=1), bert(seed=2), token_batch())
    with pytest.raises(ConfigError, match="param 'heads' = 3 does not divide the student's Q/K width 16") as info:
        loss.setup(inputs.student_features, inputs.teacher_features)
    assert "divides both" in info.value.hint


def test_causal_maps_give_later_keys_no_probability() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 5, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    probs = attention_log_probs(q, k, 2, torch.ones(2, 5), causal=True).exp()
    assert torch.all(probs.triu(diagonal=1) == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 5))
    torch.testing.assert_close(probs[..., 0, 0], torch.ones(2, 2))


# ---- through the trainer --------------------------------------------------------------------------

class Sentences(Dataset):
    """Token sequences ending in 0 to 2 padding tokens; the label is the number of padding tokens."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.pads = rng.integers(0, CLASSES, n)
        self.mask = (np.arange(LENGTH)[None, :] < LENGTH - self.pads[:, None]).astype(np.int64)
        self.ids = rng.integers(1, VOCAB, (n, LENGTH)) * self.mask

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": np.int64(self.pads[i])}


def sentence_data() -> TrainData:
    source = as_source({"train": Sentences(24, 0), "calib": Sentences(4, 1), "test": Sentences(4, 2)}, "sentences")
    return TrainData(source, get_task("text-classification", vocab_size=VOCAB, num_labels=CLASSES, max_length=LENGTH))


CFG = DistillConfig(epochs=4, batch_size=8, lr=1e-2, losses=[
    {"name": "hidden_mse", "params": {"pairs": HIDDEN_PAIRS}},
    {"name": "attention_kl", "params": {"pairs": ATTENTION_PAIRS, "heads": 2}}])


def test_distilling_a_bert_student_decreases_both_losses() -> None:
    data, student = sentence_data(), bert(hidden=16, heads=2, seed=1)
    objective = build_objective(CFG)
    history = distill(student, data, CFG, objective, Teaching(TorchTeacher(bert(seed=2), None, "teacher", task=data.task)))
    assert all(np.isfinite(history)) and history[-1] < 0.7 * history[0]


def test_cached_teacher_features_train_as_the_online_teacher(tmp_path) -> None:
    data = sentence_data()
    teacher = TorchTeacher(bert(seed=2), None, "teacher", task=data.task)
    cfg = CFG.model_copy(update={"epochs": 2})
    cached = plan_teaching(teacher, data, build_objective(cfg), cfg, tmp_path)
    assert cached.features is not None and set(cached.features) == set(build_objective(cfg).teacher_layers())
    runs = []
    for teaching in (Teaching(teacher), cached):
        student = bert(hidden=16, heads=2, seed=1)
        runs.append((distill(student, data, cfg, build_objective(cfg), teaching), student))
    assert runs[1][0] == pytest.approx(runs[0][0], rel=1e-5)


def test_distill_hands_the_batch_attention_mask_to_the_losses() -> None:
    seen: list[int] = []

    class MaskCheck(DistillLoss):
        name = "mask-check"

        def forward(self, inputs: LossInputs) -> torch.Tensor:
            assert inputs.attention_mask is not None and inputs.attention_mask.shape == (len(inputs.labels), LENGTH)
            assert torch.equal((inputs.attention_mask == 0).sum(1), inputs.labels)  # label = padding count
            seen.append(len(inputs.labels))
            return torch.nn.functional.cross_entropy(inputs.student_logits, inputs.labels)

    distill(bert(hidden=16, heads=2, seed=1), sentence_data(), DistillConfig(epochs=1, batch_size=8, lr=1e-3),
            CombinedLoss([(1.0, MaskCheck())]), Teaching())
    assert seen == [8, 8, 8]  # three training batches
