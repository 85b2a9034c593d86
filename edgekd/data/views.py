"""Cross-input distillation: one sample, two views. A data source may yield, beside the student's
inputs, the teacher's own inputs of the same sample under the prefix "teacher." (e.g. the teacher
reads a whole text as "teacher.input_ids", the student only a short part of it as "input_ids").
The teacher (training, soft labels, evaluation) reads `teacher_view(batch)`; the student and its
engines read the plain names. A batch without teacher keys is the same view for both."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

TEACHER_PREFIX = "teacher."
B = TypeVar("B", bound=Mapping[str, Any])


def has_teacher_view(batch: Mapping[str, Any]) -> bool:
    return any(name.startswith(TEACHER_PREFIX) for name in batch)


def teacher_view(batch: B) -> B:
    """The batch as the teacher sees it: "teacher.<name>" arrays under <name> (replacing the
    student's), the other keys (labels, index, ...) as they are; unchanged without teacher keys."""
    if not has_teacher_view(batch):
        return batch
    view = {name: value for name, value in batch.items() if not name.startswith(TEACHER_PREFIX)}
    view.update({name[len(TEACHER_PREFIX):]: value for name, value in batch.items() if name.startswith(TEACHER_PREFIX)})
    return view  # type: ignore[return-value]


def student_view(batch: B) -> B:
    """The batch without the teacher's arrays."""
    if not has_teacher_view(batch):
        return batch
    return {name: value for name, value in batch.items() if not name.startswith(TEACHER_PREFIX)}  # type: ignore[return-value]
