"""The stages, in the order the runner walks them. Reading this list tells you the whole product:

    build:   search -> teacher -> assistants -> distill -> export -> quantize -> check -> compile -> evaluate -> bench
    compile: import -> quantize -> check -> compile -> evaluate -> bench

One module per stage; each defines its Stage (name, what it reads and writes, what enters its cache
key, and its run function). The engine stages (quantize onwards) read only the EngineContext seam,
so `edgekd compile` walks them too.
"""
from __future__ import annotations

from edgekd.pipeline.stage import Stage
from edgekd.stages.assistants import ASSISTANTS
from edgekd.stages.bench import BENCH
from edgekd.stages.check import CHECK
from edgekd.stages.compile import COMPILE
from edgekd.stages.distill import DISTILL
from edgekd.stages.evaluate import EVALUATE
from edgekd.stages.export import EXPORT
from edgekd.stages.import_model import IMPORT
from edgekd.stages.quantize import QUANTIZE
from edgekd.stages.search import SEARCH
from edgekd.stages.teacher import TEACHER

ENGINE_STAGES: tuple[Stage, ...] = (QUANTIZE, CHECK, COMPILE, EVALUATE, BENCH)
STAGES: tuple[Stage, ...] = (SEARCH, TEACHER, ASSISTANTS, DISTILL, EXPORT, *ENGINE_STAGES)
COMPILE_STAGES: tuple[Stage, ...] = (IMPORT, *ENGINE_STAGES)

__all__ = ["COMPILE_STAGES", "ENGINE_STAGES", "STAGES", "Stage"]
