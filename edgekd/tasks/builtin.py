"""The task registry with every built-in task registered (importing a task module registers it)."""
from __future__ import annotations

import edgekd.tasks.causal_lm
import edgekd.tasks.image_classification
import edgekd.tasks.text_classification  # noqa: F401  (importing a task registers it)
from edgekd.tasks.registry import (
    ALIASES,
    TASKS,
    get_task,
    register_task,
    task_class,
    task_names,
)

__all__ = ["ALIASES", "TASKS", "get_task", "register_task", "task_class", "task_names"]
