"""Tasks, registered by name: what a batch is, how a model consumes it, the loss, the KD view, the
metric and its direction, the export contract and the latency scenarios.

    task = get_task("causal-lm", vocab_size=32000, max_length=512)
    logits = task.forward(model, batch)

`import edgekd.tasks` is light: the names below load their module (and torch) on first use;
edgekd.tasks.specs (specs, metrics and their direction) never imports torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    **dict.fromkeys(("BATCH_AXIS", "DECODE_TOKENS_PER_SECOND", "OFFLINE", "SEQUENCE_AXIS", "SINGLE_STREAM",
                     "TIME_TO_FIRST_TOKEN", "MetricSpec", "TensorSpec", "ACCURACY", "PERPLEXITY", "METRICS"), "edgekd.tasks.specs"),
    **dict.fromkeys(("Batch", "MetricState", "Task"), "edgekd.tasks.base"),
    **dict.fromkeys(("ALIASES", "TASKS", "get_task", "register_task", "task_class", "task_names"), "edgekd.tasks.builtin"),
    "CausalLM": "edgekd.tasks.causal_lm",
    "ImageClassification": "edgekd.tasks.image_classification",
    "TextClassification": "edgekd.tasks.text_classification",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'edgekd.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
