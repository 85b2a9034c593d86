"""image-classification: today's behaviour. One float input [batch, *input_shape] named "input"
(edgekd.graph.export's name; "pixel_values" for a Hugging Face model), logits [batch, classes]."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.errors import ConfigError
from edgekd.tasks.base import BATCH_AXIS, TensorSpec, check_dim
from edgekd.tasks.classification import ClassificationTask
from edgekd.tasks.registry import register_task

INPUT_NAME = "input"


@register_task("image-classification", aliases=("classification",))
@dataclass(frozen=True)
class ImageClassification(ClassificationTask):
    """`input_shape` is one sample's shape, e.g. (1, 28, 28) or (3, 224, 224)."""

    input_shape: tuple[int, ...]
    num_classes: int
    input_name: str = INPUT_NAME

    optimum_task = "image-classification"

    @classmethod
    def dims_from_data(cls, spec: Any) -> dict[str, Any]:
        """Dims from a data source's spec (edgekd.data.sources.SourceSpec): its one input's name and
        per-sample shape, its number of classes."""
        if len(spec.inputs) != 1:
            raise ConfigError(f"task 'image-classification' takes one input; the data has {len(spec.inputs)} "
                              f"({', '.join(s.name for s in spec.inputs)})", "use a task that takes these inputs")
        return {"input_shape": tuple(spec.inputs[0].shape), "num_classes": spec.num_classes, "input_name": spec.inputs[0].name}

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ConfigError(f"task 'image-classification': input_shape must be positive integers, got {self.input_shape!r}")
        check_dim(self.name, "num_classes", self.num_classes, 2)
        object.__setattr__(self, "input_shape", shape)  # a TOML list becomes a tuple

    @property
    def classes(self) -> int:
        return self.num_classes

    def inputs(self) -> tuple[TensorSpec, ...]:
        role = "image" if len(self.input_shape) == 3 else "float"
        return (TensorSpec(self.input_name, "float32", (BATCH_AXIS, *self.input_shape), role),)
