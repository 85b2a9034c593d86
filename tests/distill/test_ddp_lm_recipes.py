"""`edgekd distill --nproc` (api.distill_ddp) refuses the language-model recipes its workers do not
run (sequence-level KD, on-policy, vocabulary alignment) before anything runs, instead of training
the student on the real text with plain KD."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write
from test_lm_build import PROJECT

from edgekd import api
from edgekd.errors import ConfigError


@pytest.mark.parametrize("extra, named", [
    ('data = "teacher_generations"\n', "teacher_generations"),
    ("[distill.on_policy]\nlmbda = 0.5\n", "on_policy"),
])
def test_lm_recipes_are_refused_before_anything_runs(tmp_path: Path, extra: str, named: str) -> None:
    project = write(tmp_path / "edgekd.toml", PROJECT.replace("[quantize]", extra + "[quantize]")
                    if extra.startswith("[") else PROJECT.replace("[distill]\n", "[distill]\n" + extra))
    with pytest.raises(ConfigError, match=f"distributed distillation does not run .*{named}"):
        api.distill_ddp(2, project=project, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_the_workers_settings_refuse_them_too() -> None:
    from edgekd.distill.ddp_settings import objective_settings

    with pytest.raises(ConfigError, match="does not run vocab_alignment"):
        objective_settings({"losses": [{"name": "gjsd"}], "vocab_alignment": "shared_tokens"})
    assert "generate" not in objective_settings({"losses": [{"name": "kd"}]})  # what the workers do not use is not sent
