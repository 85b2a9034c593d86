"""Tasks, registered by name: what a batch is, how a model consumes it, the loss, the KD view, the
metric and its direction, the export contract and the latency scenarios.

    task = get_task("causal-lm", vocab_size=32000, max_length=512)
    logits = task.forward(model, batch)
"""
from edgekd.tasks.base import (
                               BATCH_AXIS,
                               DECODE_TOKENS_PER_SECOND,
                               OFFLINE,
                               SEQUENCE_AXIS,
                               SINGLE_STREAM,
                               TIME_TO_FIRST_TOKEN,
                               Batch,
                               MetricSpec,
                               MetricState,
                               Task,
                               TensorSpec,
)
from edgekd.tasks.causal_lm import CausalLM
from edgekd.tasks.image_classification import ImageClassification
from edgekd.tasks.registry import (
                               ALIASES,
                               TASKS,
                               get_task,
                               register_task,
                               task_class,
                               task_names,
)
from edgekd.tasks.text_classification import TextClassification

__all__ = [
    "ALIASES", "BATCH_AXIS", "DECODE_TOKENS_PER_SECOND", "OFFLINE", "SEQUENCE_AXIS", "SINGLE_STREAM",
    "TASKS", "TIME_TO_FIRST_TOKEN", "Batch", "CausalLM", "ImageClassification", "MetricSpec", "MetricState",
    "Task", "TensorSpec", "TextClassification", "get_task", "register_task", "task_class", "task_names",
]
