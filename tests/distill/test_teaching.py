"""edgekd/distill/teaching.py: where the teacher's outputs come from each step. Without augmentation,
from the memory-mapped caches by sample index; with augmentation, from the teacher run on the very
batch the student sees (function matching), the caches bypassed; token logits through the task's KD
view with every registered logit loss."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from distill_data import LENGTH, VOCAB, Recording, TinyLM, TokenBlocks, image_data, tiny_net
from torch import nn

from edgekd.config.models import AugmentSpec, DistillConfig
from edgekd.data.augment import build_augment
from edgekd.data.load import as_source
from edgekd.distill.losses import LOSSES, CombinedLoss, DistillLoss, LossInputs
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import LogitsFileTeacher, OnnxTeacher, TorchTeacher
from edgekd.distill.teaching import Teaching, TeacherStep, plan_teaching
from edgekd.distill.trainer import build_objective, distill, step_generator, to_tensors
from edgekd.errors import ConfigError
from edgekd.tasks import get_task

CFG = DistillConfig(epochs=2, batch_size=8, lr=1e-2)  # teacher_logit_cache on (the default)
AUGMENT = [AugmentSpec(name="random_crop", params={"padding": 1}), AugmentSpec(name="hflip")]
# every registered loss that reads logits only (the feature losses name layers and have required params)
LOGIT_LOSSES = sorted(n for n, cls in LOSSES.items() if not any(f.is_required() for f in cls.Params.model_fields.values()))


def test_without_augmentation_the_logits_come_from_the_memory_mapped_cache(tmp_path) -> None:
    data = image_data()
    teacher_module = Recording(tiny_net(1, width=8))
    teaching = plan_teaching(TorchTeacher(teacher_module, None, "t", task=data.task), data, build_objective(CFG), CFG, tmp_path)
    assert isinstance(teaching.logits, np.memmap) and "computed once and cached, memory-mapped" in teaching.note
    runs = len(teacher_module.seen)  # one streamed pass to fill the cache
    distill(tiny_net(), data, CFG, build_objective(CFG), teaching)
    assert len(teacher_module.seen) == runs  # training never ran the teacher


def test_with_augmentation_the_teacher_sees_exactly_the_students_augmented_batch(tmp_path) -> None:
    augment = build_augment(AUGMENT)
    data = image_data(augment=augment)
    student, teacher_module = Recording(tiny_net(0)), Recording(tiny_net(1, width=8))
    objective = build_objective(CFG)
    teaching = plan_teaching(TorchTeacher(teacher_module, None, "recording teacher", task=data.task), data, objective, CFG, tmp_path)
    assert teaching.logits is None and teaching.features is None and not any(tmp_path.iterdir())  # the cache is not made, not read
    assert "same augmented view as the student every step" in teaching.note and augment.describe() in teaching.note
    distill(student, data, CFG, objective, teaching)

    student_seen, teacher_seen = student.seen[1:], teacher_module.seen[1:]  # [0]: the set-up probe
    assert len(student_seen) == len(teacher_seen) == CFG.epochs * 5  # 40 samples, batches of 8
    step = 0
    for epoch in range(CFG.epochs):
        for i, arrays in enumerate(data.source.batches("train", CFG.batch_size, seed=CFG.seed + epoch)):
            augmented = augment(to_tensors(arrays), step_generator(CFG.seed, epoch, i))["input"]
            assert torch.equal(teacher_seen[step], student_seen[step]) and torch.equal(student_seen[step], augmented)
            assert not torch.equal(augmented, torch.from_numpy(arrays["input"]))  # a view the cache never held
            step += 1


def test_an_onnx_teacher_runs_on_the_augmented_batch_too(tmp_path) -> None:
    """A black-box teacher gets the augmented arrays each step: distilling from the ONNX copy of a
    linear teacher trains the same student as from the torch module itself."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    linear = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    weight, bias = (p.detach().numpy() for p in linear[1].parameters())
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "w", "b"], ["logits"], transB=1)], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "t.onnx"))
    data = image_data(augment=build_augment(AUGMENT))
    runs = []
    for teacher in (TorchTeacher(linear, None, "linear", task=data.task), OnnxTeacher(tmp_path / "t.onnx")):
        student = tiny_net()
        runs.append((student, distill(student, data, CFG, build_objective(CFG), plan_teaching(teacher, data, build_objective(CFG), CFG, tmp_path))))
    (a, losses_a), (b, losses_b) = runs
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_logits_file_cannot_teach_an_augmented_view(tmp_path) -> None:
    from edgekd.distill.logits_file import write_logits_file
    from edgekd.distill.streaming import train_split_sha256

    data = image_data(augment=build_augment(AUGMENT))
    sha = train_split_sha256(data.source)
    write_logits_file(np.zeros((40, 3), np.float32), tmp_path / "soft.npz", 3, sha, "elsewhere")
    with pytest.raises(ConfigError, match="augment needs a teacher that runs on the augmented inputs; logits file soft.npz"):
        plan_teaching(LogitsFileTeacher(tmp_path / "soft.npz", sha), data, build_objective(CFG), CFG, tmp_path)
    with pytest.raises(ValueError, match="with augmentation the teacher runs on each augmented batch"):
        TeacherStep(Teaching(None, logits=np.zeros((40, 3), np.float32)), build_objective(CFG), data.task, augmented=True)


def token_data() -> TrainData:
    source = as_source({"train": TokenBlocks(12), "calib": TokenBlocks(3, 1), "test": TokenBlocks(3, 2)}, "token blocks")
    return TrainData(source, get_task("causal-lm", vocab_size=VOCAB, max_length=LENGTH))


def test_every_registered_logit_loss_is_covered() -> None:
    assert {"ce", "kd", "hinton", "dkd"} <= set(LOGIT_LOSSES) and "fitnet" not in LOGIT_LOSSES


@pytest.mark.parametrize("loss", LOGIT_LOSSES)
def test_a_causal_lm_distills_with_every_logit_loss(loss: str, tmp_path) -> None:
    data = token_data()
    cfg = DistillConfig(epochs=2, batch_size=4, lr=1e-2, losses=[{"name": loss}])
    objective = build_objective(cfg)
    teaching = plan_teaching(TorchTeacher(TinyLM(seed=1), None, "lm teacher", task=data.task), data, objective, cfg, tmp_path)
    if objective.needs_teacher_logits():
        assert isinstance(teaching.logits, np.memmap) and teaching.logits.shape == (12, LENGTH, VOCAB)  # [N, T, V] per sample
    student = TinyLM(width=4, seed=2)
    before = copy.deepcopy(student.state_dict())
    losses = distill(student, data, cfg, objective, teaching)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())


def test_the_kd_losses_see_one_row_per_scored_token_of_teacher_and_student_alike(tmp_path) -> None:
    data = token_data()
    shapes: list[tuple] = []

    class Rows(DistillLoss):
        name = "rows"

        def forward(self, inputs: LossInputs) -> torch.Tensor:
            shapes.append((tuple(inputs.student_logits.shape), tuple(inputs.teacher_logits.shape), tuple(inputs.labels.shape)))
            return torch.nn.functional.kl_div(inputs.student_logits.log_softmax(-1), inputs.teacher_logits.log_softmax(-1),
                                              log_target=True, reduction="batchmean")

        def needs_teacher_logits(self) -> bool:
            return True

    cfg = DistillConfig(epochs=1, batch_size=12, lr=1e-9)
    teacher = TorchTeacher(TinyLM(seed=1), None, "lm teacher", task=data.task)
    objective = CombinedLoss([(1.0, Rows())])
    same = distill(TinyLM(seed=1), data, cfg, objective, plan_teaching(teacher, data, objective, cfg, tmp_path))
    batch = next(data.source.batches("train", 12))
    mask = batch["attention_mask"]
    scored = int((mask[:, :-1] * mask[:, 1:]).sum())  # positions whose token and next token are real
    assert scored < 12 * (LENGTH - 1) and shapes[-1] == ((scored, VOCAB), (scored, VOCAB), (scored,))
    assert same[0] == pytest.approx(0.0, abs=1e-6)  # the teacher's own rows: nothing to learn
    other = distill(TinyLM(seed=3), data, cfg, objective, plan_teaching(teacher, data, objective, cfg, tmp_path))
    assert other[0] > 1e-3
