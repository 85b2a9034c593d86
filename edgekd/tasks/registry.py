"""Tasks registered by name (one decorator, as timm's model registry) and made from their dims."""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from edgekd.errors import ConfigError
from edgekd.tasks.base import Task

TASKS: dict[str, type[Task]] = {}
ALIASES: dict[str, str] = {}  # another name -> registered name
T = TypeVar("T", bound=type[Task])


def register_task(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
    """Class decorator: registers a Task subclass under `name` (and `aliases`) and sets its `name`."""

    def add(cls: T) -> T:
        taken = [n for n in (name, *aliases) if n in TASKS or n in ALIASES]
        if taken:
            raise ValueError(f"task name(s) {', '.join(taken)} already registered")
        cls.name = name
        TASKS[name] = cls
        ALIASES.update({alias: name for alias in aliases})
        return cls

    return add


def task_names() -> list[str]:
    """The registered names (not the aliases), sorted."""
    return sorted(TASKS)


def task_class(name: str) -> type[Task]:
    """The Task class registered under `name` or an alias of it."""
    key = ALIASES.get(name, name)
    if key not in TASKS:
        near = difflib.get_close_matches(name, [*TASKS, *ALIASES], n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}?" if near else "use one of the registered names"
        raise ConfigError(f"unknown task '{name}' (registered: {', '.join(task_names())})", hint)
    return TASKS[key]


def get_task(name: str, **dims: Any) -> Task:
    """The task `name` made with its dims: get_task("causal-lm", vocab_size=32000, max_length=512)."""
    cls = task_class(name)
    params = inspect.signature(cls).parameters
    try:
        inspect.signature(cls).bind(**dims)
    except TypeError as exc:
        described = ", ".join(p if params[p].default is inspect.Parameter.empty else f"{p} (optional)" for p in params)
        raise ConfigError(f"task '{cls.name}': {exc}", f"it takes {described}") from None
    return cls(**dims)
