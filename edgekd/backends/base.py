"""What a runtime backend does for the build: compile the INT8 graph into what the target runs,
evaluate that engine, and measure (or estimate) its latency. One module per runtime implements it;
`get(runtime)` picks it for a target.

Compile writes into its scratch folder:
  engine.json  what the engine is (runtime, files, whether it was built here) - later stages key on it
  engine/      the files this host evaluates and benches (the engine, where it can be built here)
  bundle/      the deploy bundle: what is copied to the device (bundle.json, model, device-side runner)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from edgekd.common.fsutil import sha256_file

if TYPE_CHECKING:
    from edgekd.pipeline.context import EngineContext as Context
    from edgekd.pipeline.stage import Outcome



from edgekd.common.artefacts import BUNDLE_DIR, ENGINE_DIR, ENGINE_JSON  # noqa: F401  (re-exported)

B = TypeVar("B")


class Backend(Protocol):
    runtime: str

    def compile(self, ctx: Context, int8_model: Path, fp32_model: Path, out: Path, fused_fp32: Path | None = None) -> Outcome:
        """`fp32_model`: the float graph, an engine candidate where the backend tunes here (x86);
        `fused_fp32`: the quantize stage's fused fp32 graph of a transformer, where it wrote one (x86)."""
        ...

    def evaluate(self, ctx: Context, inputs: dict[str, Path]) -> Outcome: ...

    def bench(self, ctx: Context, inputs: dict[str, Path], out: Path) -> Outcome: ...


def load_engine(inputs: dict[str, Path]) -> tuple[Path, dict[str, Any]]:
    """The engine/ folder of the compile stage's output and its engine.json."""
    engine_json = inputs[ENGINE_JSON]
    return engine_json.parent / ENGINE_DIR, json.loads(engine_json.read_text())


def write_engine_json(out: Path, runtime: str, built_here: bool, **extra: Any) -> dict[str, Any]:
    """Describe the engine/ and bundle/ folders, with a hash of every file in them."""
    files = {str(p.relative_to(out)): sha256_file(p) for d in (ENGINE_DIR, BUNDLE_DIR) if (out / d).is_dir()
             for p in sorted((out / d).rglob("*")) if p.is_file()}
    data = {"runtime": runtime, "built_here": built_here, "files": files, **extra}
    (out / ENGINE_JSON).write_text(json.dumps(data, indent=1))
    return data


BACKENDS: dict[str, type[Backend]] = {}  # runtime name -> backend class (each runtime's package registers itself)


def register(runtime: str) -> Callable[[type[B]], type[B]]:
    """Class decorator: the backend for `runtime` (a target's `runtime`)."""
    def add(cls: type[B]) -> type[B]:
        if runtime in BACKENDS:
            raise ValueError(f"two backends for runtime {runtime!r}")
        cls.runtime = runtime
        BACKENDS[runtime] = cls
        return cls
    return add


def get(runtime: str) -> Backend:
    """The registered backend for `runtime` (edgekd.backends imports every runtime's package)."""
    if runtime not in BACKENDS:
        raise ValueError(f"no backend for runtime {runtime!r} (registered: {sorted(BACKENDS)})")
    return BACKENDS[runtime]()
