"""The data side of a distributed distillation (edgekd.distill.ddp): the project's data as a
streaming DataSource with its task and augmentations (in the parent and in every worker, as a build
opens them), the models made from their factories with the task's dims, the frozen teacher's outputs
(the on-disk, memory-mapped teacher-logit cache, or with augmentation the teacher run every step),
and the student's test metric."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from edgekd.data.sources import DataSource
    from edgekd.distill.losses import CombinedLoss
    from edgekd.distill.streaming import TrainData
    from edgekd.distill.teaching import Teaching
    from edgekd.tasks.base import Task


def open_data(data: dict[str, Any], data_dir: str, task: dict[str, Any], source: str) -> tuple[DataSource, Task]:
    """The project's [data] (`data`: DataConfig's fields; files relative to `data_dir`) as a streaming
    DataSource (edgekd.data.load.open_source, as a build opens it) and its [task] (`task`: TaskConfig's
    fields) with the dims the data gives and its args over them; errors name `source`."""
    from edgekd.config.models import DataConfig, TaskConfig
    from edgekd.data.load import open_source
    from edgekd.tasks import get_task, task_class

    stream = open_source(DataConfig.model_validate(data), Path(data_dir), source)
    cfg = TaskConfig.model_validate(task)
    try:
        made = get_task(cfg.kind, **(task_class(cfg.kind).dims_from_data(stream.spec()) | cfg.args))
    except ConfigError as exc:
        raise ConfigError(f"{source}: key 'task': {exc.args[0]}", exc.hint) from None
    if cfg.metric is not None and cfg.metric != made.metric.name:
        raise ConfigError(f"{source}: key 'task.metric' = '{cfg.metric}': task {made.name} is measured by {made.metric.name}",
                          f"remove [task] metric or set it to '{made.metric.name}'")
    return stream, made


def train_data(request: dict[str, Any]) -> TrainData:
    """What the workers train on: the source's train split, the task and the [data] augmentations."""
    from edgekd.config.models import DataConfig
    from edgekd.data.augment import build_augment
    from edgekd.distill.streaming import TrainData

    source, task = open_data(request["data"], request["data_dir"], request["task"], request["request_path"])
    return TrainData(source, task, build_augment(DataConfig.model_validate(request["data"]).augment))


def build_model(spec: dict[str, Any], task: Task, key: str, source: str) -> Any:
    """A module from {"factory", "args"}; the task's dims (num_classes, input_shape, vocab_size, ...)
    fill the factory's parameters of those names that the args leave out, as in a build."""
    from edgekd.common.factories import call

    dims: dict[str, Any] = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)} if dataclasses.is_dataclass(task) else {}
    return call(spec["factory"], spec["args"], key, source, defaults=dims)


def load_teacher(teacher: Any, path: str) -> Any:
    from edgekd.distill.weights import load_weights

    return load_weights(teacher, Path(path), "teacher")


def worker_teaching(request: dict[str, Any], data: TrainData, objective: CombinedLoss, rank: int,
                    device: torch.device) -> Teaching:
    """The teacher's side of the workers' training (edgekd.distill.teaching.Teaching), on `device`.
    With augmentation (or `teacher_logit_cache = false`): the teacher, run every step on this rank's
    rows of the augmented batch; the cache is bypassed, as in one process. Otherwise its logits on
    the train split, memory-mapped from the teacher-logit cache (on a miss rank 0 fills it, one
    streamed pass through the teacher, while the others wait)."""
    import torch.distributed as dist

    from edgekd.common.fsutil import sha256_file
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher
    from edgekd.distill.teaching import Teaching, augmented_note

    spec = request["teacher"]
    module = load_teacher(build_model(spec, data.task, "teacher.factory", request["request_path"]), spec["weights"])
    # described as a build describes it (edgekd.distill.sources): the same cache key, so the build's entry is shared
    teacher = TorchTeacher(module.to(device), sha256_file(Path(spec["weights"])), f"torch module {spec['factory']}({spec['args']})",
                           task=data.task)
    if data.augment is not None:
        return Teaching(teacher, note=augmented_note(data.augment))
    if not objective.needs_teacher_logits():
        return Teaching(note="no teacher outputs needed")
    if not request["distill"].get("teacher_logit_cache", True):
        return Teaching(teacher, note="teacher run every step (teacher_logit_cache = false)")
    cache = Path(request["logits_cache"])
    if rank == 0:
        logits, hit = cached_teacher_logits(teacher, data.source, cache)
    dist.barrier()
    if rank != 0:
        logits, hit = cached_teacher_logits(teacher, data.source, cache)
    how = "from the cache (computed earlier)" if hit else "computed once by rank 0 and cached"
    return Teaching(teacher, logits=logits, note=f"teacher logits {how} in {cache}, memory-mapped")


def metric_on_test(student: Any, source: DataSource, task: Task) -> dict[str, Any]:
    """The task's metric of the student on the test split (bounded: read whole)."""
    import torch

    from edgekd.data.sources import read_split

    arrays = read_split(source, "test")
    state = task.metric_state()
    state.update(torch.from_numpy(task.predict(student, arrays)), arrays)
    return {"name": task.metric.name, "value": state.value()}
