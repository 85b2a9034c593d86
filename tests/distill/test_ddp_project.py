"""edgekd/distill/ddp.py runs on the project's task, [data] augment and teacher-logit cache, as a
build does: the request carries them, bad ones are refused before launch, and the slow tests launch
torchrun to show that the workers follow them (compared with the in-process trainer) and that
`edgekd distill --nproc` (api.distill_ddp) reads the build's teacher-logit cache."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddp_runs import (  # noqa: E402
    AUGMENT,
    CFG,
    DIGITS,
    HALVED,
    STUDENT_ARGS,
    digits_teacher,
    distill,
    in_process,
    make_run,
    max_abs_diff,
    project,
    teacher_weights,
)

from edgekd.common.toolchain import torch_threads  # noqa: E402
from edgekd.config.models import AugmentSpec, DataConfig, TaskConfig  # noqa: E402
from edgekd.data.sources import SplitsSource  # noqa: E402
from edgekd.distill import ddp  # noqa: E402
from edgekd.distill.ddp_settings import Factory, make_request, objective_settings  # noqa: E402
from edgekd.errors import ConfigError  # noqa: E402
from edgekd.examples import digits  # noqa: E402
from edgekd.tasks import get_task  # noqa: E402

__all__ = ["project", "teacher_weights"]  # fixtures


def test_bad_augmentations_and_tasks_are_refused_before_launch(tmp_path: Path) -> None:
    weights = tmp_path / "teacher.safetensors"
    weights.write_bytes(b"not read before launch")
    run = make_run(weights, tmp_path, 2, workdir=tmp_path / "wd")
    with pytest.raises(ConfigError, match=r"data.augment\[1\]: unknown augmentation 'nope'"):
        ddp.distill_distributed(dataclasses.replace(run, data=DataConfig(factory=f"{DIGITS}:load", augment=[
            AugmentSpec(name="hflip"), AugmentSpec(name="nope")])))
    with pytest.raises(ConfigError, match=r"data.augment\[0\].params \(hflip\): 'q'"):
        ddp.distill_distributed(dataclasses.replace(run, data=DataConfig(factory=f"{DIGITS}:load", augment=[
            AugmentSpec(name="hflip", params={"q": 1})])))
    with pytest.raises(ConfigError, match="key 'task': unknown task 'image-clasification'"):
        ddp.distill_distributed(dataclasses.replace(run, task=TaskConfig(kind="image-clasification")))
    with pytest.raises(ConfigError, match="key 'task.metric' = 'perplexity'"):
        ddp.distill_distributed(dataclasses.replace(run, task=TaskConfig(metric="perplexity")))
    assert not (tmp_path / "wd").exists()


def test_the_request_carries_the_task_the_augmentations_and_the_logits_cache(tmp_path: Path) -> None:
    augment = [AugmentSpec(name="random_crop", params={"padding": 1}), AugmentSpec(name="hflip")]
    run = make_run(tmp_path / "t.safetensors", tmp_path, 2, data=DataConfig(factory=f"{DIGITS}:load", args={"seed": 1}, augment=augment),
                   task=TaskConfig(kind="image-classification", args={"num_classes": 10}), workdir=tmp_path / "wd")
    request = json.loads(json.dumps(make_request(run, objective_settings(CFG))))  # what the workers read
    assert request["task"] == {"kind": "image-classification", "metric": None, "args": {"num_classes": 10}}
    assert DataConfig.model_validate(request["data"]) == run.data
    assert request["data"]["augment"] == [{"name": "random_crop", "params": {"padding": 1}}, {"name": "hflip", "params": {}}]
    assert request["logits_cache"] == str((tmp_path / "wd" / "teacher-logits").resolve())  # default: under the workdir
    shared = make_request(dataclasses.replace(run, logits_cache=tmp_path / "cache" / "teacher-logits"), objective_settings(CFG))
    assert shared["logits_cache"] == str((tmp_path / "cache" / "teacher-logits").resolve())


# ------------------------------------------------------------------------------------ slow: torchrun


@pytest.mark.slow
def test_the_workers_follow_the_given_task_and_read_the_given_logits_cache(teacher_weights: Path, project: str,
                                                                           tmp_path: Path) -> None:
    """One process on the project's own task (its KD view halves the logits) against a teacher-logit
    cache filled beforehand and then altered (each row holds the next sample's logits): the run
    reproduces the in-process trainer on that task against those logits, so both reached the workers;
    the entry was read, not recomputed, and nothing was cached under the workdir."""
    import os

    from edgekd.distill.logit_cache import cached_teacher_logits

    cache = tmp_path / "build-cache" / "teacher-logits"
    logits, hit = cached_teacher_logits(digits_teacher(teacher_weights), SplitsSource(digits.load()), cache)
    (entry,) = cache.iterdir()
    altered = np.roll(np.array(logits), 1, axis=0)
    del logits
    np.save(tmp_path / "altered.npy", altered)
    os.replace(tmp_path / "altered.npy", entry)
    before = entry.stat().st_mtime_ns
    result, weights = distill(make_run(teacher_weights, tmp_path, 1, data=DataConfig(factory=f"{project}:load"),
                                       task=TaskConfig(kind=HALVED), logits_cache=cache))
    assert not hit and result["teaching"].startswith(f"teacher logits from the cache (computed earlier) in {cache}")
    assert list(cache.iterdir()) == [entry] and entry.stat().st_mtime_ns == before
    assert not (tmp_path / "work1" / "teacher-logits").exists()
    halved = get_task(HALVED, input_shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(CFG["seed"])
    student = digits.student(**STUDENT_ARGS)
    losses = in_process(student, teacher_weights, CFG, task=halved, logits=altered)
    assert max_abs_diff(weights, student.state_dict()) <= 1e-6
    assert result["losses"] == pytest.approx(losses, rel=1e-6)
    torch.manual_seed(CFG["seed"])
    on_default_task = in_process(digits.student(**STUDENT_ARGS), teacher_weights, CFG, logits=altered)
    assert on_default_task != pytest.approx(losses, rel=1e-3)  # the task made the difference


@pytest.mark.slow
def test_augmentation_on_one_process_is_the_in_process_trainer(teacher_weights: Path, tmp_path: Path) -> None:
    """[data] augment (random crop, flip, mixup) in the workers: the same augmented batches as the
    in-process trainer, the teacher run on them every step, the teacher-logit cache bypassed."""
    result, weights = distill(make_run(teacher_weights, tmp_path, 1, data=DataConfig(factory=f"{DIGITS}:load", augment=AUGMENT)))
    assert "the teacher ran on the same augmented view" in result["teaching"] and "bypassed" in result["teaching"]
    assert not (tmp_path / "work1" / "teacher-logits").exists()
    torch.manual_seed(CFG["seed"])
    student = digits.student(**STUDENT_ARGS)
    losses = in_process(student, teacher_weights, CFG, augment=AUGMENT)
    print(f"\naugmented: 1 process vs in-process weights max|diff| {max_abs_diff(weights, student.state_dict()):.3g}; "
          f"losses {result['losses']} vs {losses}")
    assert max_abs_diff(weights, student.state_dict()) <= 1e-6
    assert result["losses"] == pytest.approx(losses, rel=1e-6)
    torch.manual_seed(CFG["seed"])
    unaugmented = in_process(digits.student(**STUDENT_ARGS), teacher_weights, CFG)
    assert result["losses"] != pytest.approx(unaugmented, rel=1e-3)  # augmentation changed the run


@pytest.mark.slow
def test_augmentation_on_two_processes_without_batchnorm_reproduces_one(teacher_weights: Path, project: str, tmp_path: Path) -> None:
    """Every rank augments the same global batch with the same generator and takes its rows: with
    nothing per-process left (no BatchNorm), 2 processes reproduce the in-process trainer."""
    result, weights = distill(make_run(teacher_weights, tmp_path, 2, student=Factory(f"{project}:student_no_bn", STUDENT_ARGS),
                                       data=DataConfig(factory=f"{DIGITS}:load", augment=AUGMENT)))
    torch.manual_seed(CFG["seed"])
    student = sys.modules[project].student_no_bn(**STUDENT_ARGS)
    losses = in_process(student, teacher_weights, CFG, augment=AUGMENT)
    diff = max_abs_diff(weights, student.state_dict())
    print(f"\naugmented, no BatchNorm: 2 processes vs in-process weights max|diff| {diff:.3g}; losses {result['losses']} vs {losses}")
    assert diff < 1e-4
    assert result["losses"] == pytest.approx(losses, rel=1e-5)


API_PROJECT = """
name = "ddp-api"

[teacher]
factory = "edgekd.examples.digits:teacher"
args = { width = 8 }

[teacher.train]
epochs = 2

[student]
factory = "edgekd.examples.digits:student"
args = { width = 4 }

[data]
factory = "edgekd.examples.digits:load"

[task]
kind = "image-classification"
args = { num_classes = 10 }

[distill]
epochs = 2
"""


@pytest.mark.slow
def test_edgekd_distill_uses_the_builds_task_and_teacher_logit_cache(tmp_path: Path) -> None:
    """`edgekd distill --nproc` (api.distill_ddp) after a build's distill stage: the workers get the
    project's task and read the build's teacher-logit cache entry (the teacher is not run again)."""
    from edgekd import api
    from edgekd.config.loading import ConfigSearch
    from edgekd.pipeline import runner
    from edgekd.pipeline.cache import StageCache
    from edgekd.stages import STAGES

    project = tmp_path / "edgekd.toml"
    project.write_text(API_PROJECT)
    cache_root = tmp_path / "stage-cache"
    ctx = api.resolve_inputs("x86", "default", project, ConfigSearch())
    ctx.cache_root = cache_root
    with torch_threads(1):
        records = runner.run(ctx, StageCache(cache_root), tmp_path / "build", log=lambda _: None, until="distill", stages=STAGES)
    assert (records[-1].name, records[-1].status) == ("distill", "ran")
    logits = cache_root / "teacher-logits"
    entries = {p.name: p.stat().st_mtime_ns for p in logits.iterdir()}
    assert len(entries) == 1
    result = api.distill_ddp(1, project=project, out=tmp_path / "ddp", cache_dir=cache_root, log=lambda _: None)
    assert result["teaching"].startswith(f"teacher logits from the cache (computed earlier) in {logits.resolve()}")
    assert {p.name: p.stat().st_mtime_ns for p in logits.iterdir()} == entries
    request = json.loads((tmp_path / "ddp" / "ddp" / ddp.REQUEST_FILE).read_text())
    assert request["task"] == {"kind": "image-classification", "metric": None, "args": {"num_classes": 10}}
    assert result["test_metric"]["name"] == "accuracy" and Path(result["weights"]) == (tmp_path / "ddp" / "student.safetensors").resolve()
