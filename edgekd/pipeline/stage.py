"""What a stage is to the runner: a name, the artefacts it reads and writes, what enters its cache
key, and a function from input files to output files plus metrics (an Outcome). The runner walks
a list of them it is given (edgekd.stages holds the lists); it knows no stage itself."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekd.pipeline.results import Metric

Files = dict[str, Path]


@dataclass
class Outcome:
    metrics: dict[str, Metric] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    inputs: tuple[str, ...]  # "name?": read only if an earlier stage wrote it
    outputs: tuple[str, ...]  # files it must write; "name/" is a folder it may write
    tools: tuple[str, ...]  # distributions whose versions enter the cache key
    config: Callable[[Any], dict[str, Any]]  # the resolved settings that enter the cache key (from the context)
    run: Callable[[Any, Files, Path], Outcome]  # (context, input files, scratch folder)


def size_metric(path: Path, what: str) -> Metric:
    return Metric(path.stat().st_size / 1e6, "MB", "measured", f"file size of {what} (MB = 10^6 bytes)")
