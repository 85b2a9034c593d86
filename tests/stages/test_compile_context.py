"""edgekd/pipeline/compile_context.py: where `edgekd compile` takes its shapes and data from."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config.loading import ConfigSearch, load_profile, load_project, load_target
from edgekd.errors import ConfigError
from edgekd.stages.compile_context import CompileData, compile_context

SEARCH = ConfigSearch()


def _ctx(model: Path, target: str = "x86", shapes: dict | None = None, data: CompileData = CompileData()):
    return compile_context(model, load_target(target, SEARCH), load_profile("ci", SEARCH), dict(shapes or {}), data)


def test_generated_data_is_said_to_be_generated(zoo) -> None:
    ctx = _ctx(zoo("vit", "torch"))
    assert not ctx.calib_feeds.fit_for_accuracy and ctx.eval_feeds.labels is None
    assert ctx.calib_feeds.sha256() != ctx.eval_feeds.sha256()  # different seeds
    assert any("calibrated on generated feeds" in w for w in ctx.report_sections(Path("."))["warnings"])


def test_a_decoder_with_an_empty_past_is_calibrated_at_one_decode_step(zoo) -> None:
    ctx = _ctx(zoo("gpt2", "optimum"))
    assert ctx.model_inputs.shapes()["past_key_values.0.key"] == (1, 2, 0, 16)  # the build's shapes
    calib = ctx.calib_feeds.arrays
    assert calib["past_key_values.0.key"].shape[1:] == (2, 127, 16) and calib["input_ids"].shape[1:] == (1,)
    assert np.std(calib["past_key_values.0.key"]) > 0.5  # values a quantizer can take a range from
    assert "one decode step" in ctx.calib_feeds.description
    htp = _ctx(zoo("gpt2", "optimum"), "snapdragon-8gen3")  # a static-shape target builds at the decode step
    assert htp.model_inputs.shapes()["input_ids"] == (1, 1)
    # a causal LM at a token sequence: perplexity, on text the fp32 graph sampled; at the decode step: accuracy (agreement)
    assert ctx.task_name == "causal-lm" and ctx.metric.name == "perplexity" and "sampled itself" in ctx.eval_feeds.description
    assert htp.task is None and htp.metric.name == "accuracy"


def test_data_folders_fix_the_shapes_and_calibrate_when_alone(zoo, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    np.save(folder / "input_ids.npy", np.ones((5, 32), np.int64))
    np.save(folder / "attention_mask.npy", np.ones((5, 32), np.int64))
    np.save(folder / "labels.npy", np.arange(5) % 3)
    ctx = _ctx(zoo("distilbert", "torch"), data=CompileData(data_dir=folder))
    assert ctx.model_inputs.shapes() == {"input_ids": (1, 32), "attention_mask": (1, 32)}
    assert ctx.eval_feeds.labels.tolist() == [0, 1, 2, 0, 1]
    assert "the evaluation data: give --calib DIR" in ctx.calib_feeds.description and ctx.calib_feeds.labels is None
    with pytest.raises(ConfigError, match="has 32 on axis 1, the model's input takes 16"):
        _ctx(zoo("distilbert", "torch"), shapes={"input_ids": (1, 16), "attention_mask": (1, 16)}, data=CompileData(data_dir=folder))


def test_project_data_needs_a_single_input_model(zoo) -> None:
    project = load_project(Path(__file__).parents[2] / "edgekd" / "examples" / "digits.toml")
    with pytest.raises(ConfigError, match="a project's data has one input array, the model has 2 inputs"):
        _ctx(zoo("bert", "torch"), data=CompileData(project=project))
    with pytest.raises(ConfigError, match=r"the data's samples are \(1, 8, 8\), the model's input 'pixel_values' takes"):
        _ctx(zoo("resnet", "torch"), data=CompileData(project=project))
