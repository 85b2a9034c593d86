"""The data side of a distributed distillation (edgekd.distill.ddp): the project's data as a
streaming DataSource and its task (in the parent and in every worker), the frozen teacher's logits
from the on-disk, memory-mapped teacher-logit cache, and the student's test metric."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

    from edgekd.data.sources import DataSource
    from edgekd.tasks.base import Task

DEFAULT_TASK = {"kind": "image-classification", "args": {}}


def open_data(data: dict[str, Any], task: dict[str, Any], source: str) -> tuple[DataSource, Task]:
    """The data factory's result as a streaming DataSource (edgekd.data.load.as_source: Splits, torch
    datasets or a DataSource) and the task {"kind", "args"} with the dims the data gives; errors name
    `source`."""
    from edgekd.common.factories import call
    from edgekd.data.load import as_source
    from edgekd.tasks import get_task, task_class

    value = call(data["factory"], data["args"], "data.factory", source)
    stream = as_source(value, f"{source}: data.factory '{data['factory']}'")
    try:
        cls = task_class(task["kind"])
        made = get_task(task["kind"], **(cls.dims_from_data(stream.spec()) | dict(task.get("args") or {})))
    except ConfigError as exc:
        raise ConfigError(f"{source}: key 'task': {exc.args[0]}", exc.hint) from None
    return stream, made


def load_teacher(teacher: Any, path: str) -> Any:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        teacher.load_state_dict(load_file(path))
    except (RuntimeError, OSError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: cannot load the teacher weights ({first})",
                          "give safetensors weights saved from the teacher factory's model") from None
    return teacher.eval()


def teacher_logits(request: dict[str, Any], source: DataSource, task: Task, rank: int) -> np.ndarray:
    """The frozen teacher's logits on the train split, memory-mapped from the teacher-logit cache:
    rank 0 fills it (one streamed pass through the teacher) while the others wait."""
    import torch.distributed as dist

    from edgekd.common.factories import call
    from edgekd.common.fsutil import sha256_file
    from edgekd.distill.logit_cache import cached_teacher_logits
    from edgekd.distill.teachers import TorchTeacher

    spec = request["teacher"]
    module = load_teacher(call(spec["factory"], spec["args"], "teacher.factory", request["request_path"]), spec["weights"])
    teacher = TorchTeacher(module, sha256_file(Path(spec["weights"])), f"torch module {spec['factory']}({spec['args']})", task=task)
    cache = Path(request["logits_cache"])
    if rank == 0:
        cached_teacher_logits(teacher, source, cache)
    dist.barrier()
    return cached_teacher_logits(teacher, source, cache)[0]


def metric_on_test(student: Any, source: DataSource, task: Task) -> dict[str, Any]:
    """The task's metric of the student on the test split (bounded: read whole)."""
    import torch

    from edgekd.data.sources import read_split

    arrays = read_split(source, "test")
    state = task.metric_state()
    state.update(torch.from_numpy(task.predict(student, arrays)), arrays)
    return {"name": task.metric.name, "value": state.value()}
