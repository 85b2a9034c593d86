"""The positions a model declares (EngineContext.max_positions: a fused decoder engine's rotary caches
are cut to them, edgekd.graph.gqa_fusion): `edgekd compile` reads the config.json beside the model, a
distillation build its student's Hugging Face config; a model that declares none gives None."""
from __future__ import annotations

import json
from pathlib import Path

from edgekd.config.loading import ConfigSearch, load_profile, load_project, load_target
from edgekd.stages.compile_context import CompileData, compile_context
from edgekd.stages.context import Context

SEARCH = ConfigSearch()


def test_edgekd_compile_reads_the_config_beside_the_model(zoo) -> None:
    model = zoo("gpt2", "optimum")
    ctx = compile_context(model, load_target("x86", SEARCH), load_profile("ci", SEARCH), {}, CompileData())
    assert ctx.max_positions == json.loads((model.parent / "config.json").read_text())["n_positions"]
    torch_export = compile_context(zoo("gpt2", "torch"), load_target("x86", SEARCH), load_profile("ci", SEARCH), {}, CompileData())
    assert torch_export.max_positions is None  # no config.json beside it


def test_a_build_reads_its_students_hugging_face_config(tmp_path: Path) -> None:
    from edgekd.examples.pydocs import TINY, project_toml

    (tmp_path / "edgekd.toml").write_text(project_toml(TINY, 0))
    ctx = Context(load_project(tmp_path / "edgekd.toml"), load_target("x86", SEARCH), load_profile("ci", SEARCH))
    assert ctx.max_positions == TINY.max_length  # the example writes max_position_embeddings = max_length
