"""What the distributed-distillation tests share (tests/distill/test_ddp.py, test_ddp_project.py): the
digits settings, a user project module, the trained teacher, a DistributedRun of them, and the
in-process trainer on the same data, teacher and settings to compare with."""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from edgekd.common.toolchain import torch_threads
from edgekd.config.models import AugmentSpec, DataConfig, DistillConfig, TrainConfig
from edgekd.data.augment import build_augment
from edgekd.data.sources import SplitsSource
from edgekd.distill import ddp
from edgekd.distill.ddp_settings import DistributedRun, Factory
from edgekd.distill.streaming import TrainData
from edgekd.distill.teachers import TorchTeacher
from edgekd.distill.teaching import Teaching
from edgekd.distill.trainer import build_objective, train_supervised
from edgekd.distill.trainer import distill as distill_in_process
from edgekd.examples import digits
from edgekd.tasks import get_task

DIGITS = "edgekd.examples.digits"
CFG = {"temperature": 4.0, "alpha": 0.9, "epochs": 4, "lr": 3e-3, "batch_size": 64, "seed": 0}
TEACHER_ARGS = {"width": 8}
STUDENT_ARGS = {"width": 4}
TASK = get_task("image-classification", input_shape=(1, 8, 8), num_classes=10)
AUGMENT = [AugmentSpec(name="random_crop", params={"padding": 1}), AugmentSpec(name="hflip"), AugmentSpec(name="mixup", params={"alpha": 0.4})]
HALVED = "halved-image-classification"
# A user project's own module (what `"package.module:function"` names): the digits student without
# BatchNorm, so that data parallelism has nothing left that differs from one process; a factory
# that crashes inside the workers; and a task of its own, registered when its data factory is imported
# (as a worker does), so that a run can only follow it if the task is handed to the workers.
PROJECT_MODULE = '''
from dataclasses import dataclass

from torch import nn
from edgekd.examples import digits
from edgekd.tasks.image_classification import ImageClassification
from edgekd.tasks.registry import register_task


def student_no_bn(width: int = 4) -> nn.Module:
    return nn.Sequential(*[nn.Identity() if isinstance(m, nn.BatchNorm2d) else m for m in digits.student(width)])


def broken_student() -> nn.Module:
    raise RuntimeError("boom: the student factory crashed")


@register_task("halved-image-classification")
@dataclass(frozen=True)
class Halved(ImageClassification):
    """image-classification whose KD view is the logits halved."""

    def kd_view(self, logits, batch):
        return super().kd_view(logits, batch) / 2


def load():
    return digits.load()
'''


def make_run(teacher_weights: Path, out: Path, nproc: int, **changes: Any) -> DistributedRun:
    """The digits run (student width 4, teacher width 8, CFG) with `changes` (DistributedRun's fields)."""
    run = DistributedRun(Factory(f"{DIGITS}:student", STUDENT_ARGS), Factory(f"{DIGITS}:teacher", TEACHER_ARGS), teacher_weights,
                         DataConfig(factory=f"{DIGITS}:load"), CFG, nproc, out / f"student{nproc}.safetensors", out / f"work{nproc}")
    return dataclasses.replace(run, **changes)


def distill(run: DistributedRun) -> tuple[dict, dict]:
    """Run it through torchrun: the result and the student's weights."""
    from safetensors.torch import load_file

    result = ddp.distill_distributed(run)
    return result, load_file(result["weights"])


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits teacher (width 8) trained 4 epochs, as safetensors."""
    from safetensors.torch import save_file

    splits = digits.load()
    torch.manual_seed(0)
    teacher = digits.teacher(**TEACHER_ARGS)
    with torch_threads(1):  # tiny convolutions: one thread is faster here, and the workers use one
        train_supervised(teacher, TrainData(SplitsSource(splits), TASK), TrainConfig(epochs=4, lr=3e-3, batch_size=64, seed=0))
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_file(teacher.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PROJECT_MODULE importable as `ddp_project` (here and, through sys.path, in the workers)."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "ddp_project.py").write_text(PROJECT_MODULE)
    sys.path.insert(0, str(folder))
    yield "ddp_project"
    sys.path.remove(str(folder))
    from edgekd.tasks import TASKS

    TASKS.pop(HALVED, None)  # the registry holds the built-in tasks only (tests/tasks)
    sys.modules.pop("ddp_project", None)


def digits_teacher(teacher_weights: Path) -> TorchTeacher:
    """The trained teacher as a build (and the workers) describe it: the same teacher-logit cache key."""
    from safetensors.torch import load_file

    from edgekd.common.fsutil import sha256_file

    module = digits.teacher(**TEACHER_ARGS)
    module.load_state_dict(load_file(str(teacher_weights)))
    return TorchTeacher(module.eval(), sha256_file(teacher_weights), f"torch module {DIGITS}:teacher({TEACHER_ARGS})", task=TASK)


def in_process(student: Any, teacher_weights: Path, cfg: dict, task: Any = TASK, augment: list[AugmentSpec] | None = None,
               logits: Any = None) -> list[float]:
    """The one-process trainer on the same data, teacher and settings (one intra-op thread, as the
    workers): against `logits` (default: the teacher's), or with `augment` the teacher every step."""
    splits = digits.load()
    teacher = digits_teacher(teacher_weights)
    config = DistillConfig(**cfg)
    data = TrainData(SplitsSource(splits), task, build_augment(augment or []))
    with torch_threads(1):  # tiny convolutions: one thread is faster here, and the workers use one
        if augment:
            teaching = Teaching(teacher)
        else:
            teaching = Teaching(logits=TASK.predict(teacher.module, {"input": splits.train.x}) if logits is None else logits)
        return distill_in_process(student, data, config, build_objective(config), teaching)


def accuracy_pt(model: Any) -> float:
    splits = digits.load()
    return float((TASK.predict(model, {"input": splits.test.x}).argmax(1) == splits.test.y).mean() * 100)


def max_abs_diff(a: dict, b: dict, params_only: bool = False) -> float:
    keys = [k for k in a if not params_only or not k.split(".")[-1].startswith(("running_", "num_batches"))]
    assert set(a) == set(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)
