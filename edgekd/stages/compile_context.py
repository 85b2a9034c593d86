"""`edgekd compile MODEL.onnx`: the context of a build from a trained model. Its inputs are resolved
from the model (and --shape), and its data comes from, in this order:

- calibration: `--calib DIR` (a folder of .npy/.npz files named by input), else `--data DIR`, else
  the project's calibration split (`--project`), else generated feeds, labelled in the report as
  not fit for accuracy;
- evaluation: `--data DIR` (with labels.npy), else the project's test split, else generated feeds
  (no accuracy then: the INT8 graph and the engine are compared with the fp32 model instead).

A decoder with a KV cache (a token `input_ids` input, past key/values, [batch, sequence, vocab]
logits) is a causal language model: it is measured by perplexity (task causal-lm, budgets
`*_perplexity_increase_pct`), on the data's token ids where --data gives them, else on text the fp32
graph samples itself (edgekd.stages.sampled_text).

Where data is given and --shape is not, the data's own shapes fix the model's dims.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.fsutil import sha256_file
from edgekd.common.version import __version__
from edgekd.config.loading import Resolved
from edgekd.config.models import Profile, Project, QuantizeConfig, apply_recipe
from edgekd.config.target import Target
from edgekd.errors import ConfigError
from edgekd.graph.feeds import (
    FeedSet,
    load_feed_folder,
    random_feedset,
    read_feed_arrays,
)
from edgekd.graph.hf_config import declared_config, declared_positions
from edgekd.graph.inputs import ModelInputs
from edgekd.graph.resolve import load_inputs
from edgekd.pipeline.context import EngineContext
from edgekd.tasks.specs import ACCURACY, MetricSpec

EVAL_SEED = 1  # generated evaluation feeds differ from the generated calibration feeds (seed 0)
GENERATED_EVAL_ROWS = 16
GENERATED_CALIB_ROWS = 64


@dataclass(frozen=True)
class CompileData:
    """Where `edgekd compile` takes its data from (each optional)."""

    calib_dir: Path | None = None
    data_dir: Path | None = None
    project: Resolved[Project] | None = None


@dataclass
class CompileContext(EngineContext):
    model_path: Path
    target_file: Resolved[Target]
    profile_file: Resolved[Profile]
    model_inputs: ModelInputs
    calib_feeds: FeedSet
    eval_feeds: FeedSet
    quantize_config: QuantizeConfig
    model_sha256: str
    cache_root: Path = Path(".")

    @property
    def metric(self) -> MetricSpec:
        """Perplexity for a compiled language model (its task), else accuracy."""
        return self.task.metric if self.task is not None else ACCURACY

    @functools.cached_property
    def max_positions(self) -> int | None:  # type: ignore[override]
        return declared_positions(self.model_path)

    @functools.cached_property
    def model_config(self) -> Any:  # type: ignore[override]
        return declared_config(self.model_path)

    @property
    def name(self) -> str:
        return self.model_path.stem if self.model_path.stem != "model" else self.model_path.parent.name

    @functools.cached_property
    def data_fingerprint(self) -> str:
        return hashlib.sha256((self.calib_feeds.sha256() + self.eval_feeds.sha256()).encode()).hexdigest()

    def provenance_props(self, stage: str, target: bool = False) -> dict[str, str]:
        values = {"edgekd.version": __version__, "edgekd.producer": f"edgekd {__version__}, {stage} stage (edgekd compile)",
                  "edgekd.source_model_sha256": self.model_sha256, "edgekd.data_sha256": self.data_fingerprint}
        if target:
            values |= {"edgekd.target": self.target_file.name, "edgekd.runtime": self.target.runtime}
        return values

    def report_project(self) -> dict[str, Any]:
        return {"name": self.name, "file": str(self.model_path), "sha256": self.model_sha256, "via": "edgekd compile",
                "description": f"a trained model compiled for {self.target_file.name} by `edgekd compile` (no distillation)"}

    def report_sections(self, out_dir: Path) -> dict[str, Any]:
        provenance = {"kind": "compiled", "model": {"file": str(self.model_path), "sha256": self.model_sha256},
                      "calibration": self.calib_feeds.description, "evaluation": self.eval_feeds.description,
                      "data_sha256": self.data_fingerprint}
        warnings = [] if self.calib_feeds.fit_for_accuracy else [
            "calibrated on generated feeds: the INT8 ranges come from random inputs, not real data (give --calib DIR)"]
        return {"provenance": provenance, "lineage": None, "warnings": warnings}


def _project_splits(project: Resolved[Project], profile: Profile, inputs: ModelInputs) -> tuple[FeedSet, FeedSet]:
    """The project's calibration and test splits, fed to the model's one input."""
    from edgekd.common.factories import call
    from edgekd.data import check_splits

    if len(inputs.inputs) != 1:
        raise ConfigError(f"{project.path}: a project's data has one input array, the model has {len(inputs.inputs)} "
                          f"inputs ({', '.join(inputs.names())})", "give the data as a folder: --calib DIR / --data DIR")
    cfg = apply_recipe(project.config, profile.recipe).data
    splits = check_splits(call(cfg.factory, cfg.args, "data.factory", str(project.path)), f"{project.path}: data.factory '{cfg.factory}'")
    spec = inputs.inputs[0]
    if tuple(splits.input_shape) != spec.shape[1:]:
        raise ConfigError(f"{project.path}: the data's samples are {splits.input_shape}, the model's input '{spec.name}' takes "
                          f"{spec.shape[1:]}", "give a project whose data fits the model")
    name, dtype = spec.name, np.dtype(spec.dtype)
    return (FeedSet({name: splits.calib.x.astype(dtype)}, splits.calib.y, f"the {len(splits.calib)} samples of {project.name}'s calibration split"),
            FeedSet({name: splits.test.x.astype(dtype)}, splits.test.y, f"the {len(splits.test)} held-out test samples of {project.name}"))


def _data_shapes(folders: list[Path | None], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """--shape values, completed by the shapes of given data (batch 1, the rest as the data has it)."""
    found = dict(shapes)
    for folder in folders:
        if folder is None:
            continue
        arrays, _ = read_feed_arrays(folder)
        for name, array in arrays.items():
            found.setdefault(name, (1, *array.shape[1:]))
    return found


def _generated_calibration(model: Path, overrides: dict[str, tuple[int, ...]], inputs: ModelInputs, rows: int) -> FeedSet:
    """Generated calibration feeds; a decoder whose past is empty at the build's shapes is calibrated
    at one decode step instead (an empty past gives its Q/DQ nodes no range: NaN scales)."""
    if not any(i.role == "past_key_values" and 0 in i.shape for i in inputs.inputs):
        return random_feedset(inputs, rows)
    step = load_inputs(model, overrides, static=True)
    feeds = random_feedset(step, rows)
    return FeedSet(feeds.arrays, None, f"{feeds.description}, at one decode step ({step.describe()}): the build's empty "
                   "past has no values to calibrate on", fit_for_accuracy=False)


def compile_context(model: Path, target: Resolved[Target], profile: Resolved[Profile], shapes: dict[str, tuple[int, ...]],
                    data: CompileData) -> CompileContext:
    """Resolve the model's inputs and its calibration and evaluation data (see the module docstring)."""
    import onnx

    names = {i.name for i in onnx.load(str(model), load_external_data=False).graph.input}
    overrides = {k: v for k, v in _data_shapes([data.calib_dir, data.data_dir], shapes).items() if k in names}
    inputs = load_inputs(model, overrides, static=target.config.runtime == "qnn-htp")
    quantize = QuantizeConfig.model_validate({**(data.project.config.quantize.model_dump() if data.project else {}),
                                              **profile.config.recipe.quantize})
    evaluation = load_feed_folder(data.data_dir, inputs) if data.data_dir else None
    calib = load_feed_folder(data.calib_dir, inputs) if data.calib_dir else None
    if data.project is not None and (calib is None or evaluation is None):
        project_calib, project_test = _project_splits(data.project, profile.config, inputs)
        calib, evaluation = calib or project_calib, evaluation or project_test
    if calib is None and evaluation is not None:
        calib = FeedSet(evaluation.arrays, None, f"{evaluation.description} (the evaluation data: give --calib DIR for a "
                        "separate calibration set)")
    calib = calib or _generated_calibration(model, overrides, inputs, min(quantize.calibration_samples, GENERATED_CALIB_ROWS))
    task = language_model(model, inputs)
    if evaluation is None and task is not None:
        from edgekd.stages.sampled_text import sampled_feedset

        evaluation = sampled_feedset(model, inputs, GENERATED_EVAL_ROWS, EVAL_SEED)
    evaluation = evaluation or random_feedset(inputs, GENERATED_EVAL_ROWS, seed=EVAL_SEED)
    ctx = CompileContext(model, target, profile, inputs, calib, evaluation, quantize, sha256_file(model))
    if task is not None:
        ctx.task, ctx.task_name = task, "causal-lm"
    return ctx


def language_model(model: Path, inputs: ModelInputs) -> Any:
    """The causal-lm task (edgekd.tasks.CausalLM) of a decoder graph with a KV cache whose token input
    is `input_ids` and whose logits are [batch, sequence, vocab]; None for any other model, and for a
    decoder resolved at one decode step (a static-shape target: no sequence to score)."""
    import onnx

    from edgekd.graph.decoder import has_kv_cache
    from edgekd.tasks.text import INPUT_IDS

    tokens = [i for i in inputs.inputs if i.role == "token_ids"]
    if len(tokens) != 1 or tokens[0].name != INPUT_IDS or len(tokens[0].shape) != 2 or tokens[0].shape[1] < 2 or not has_kv_cache(model):
        return None
    outputs = onnx.load(str(model), load_external_data=False).graph.output
    dims = [d.dim_value for d in outputs[0].type.tensor_type.shape.dim] if outputs else []
    if len(dims) != 3 or dims[2] <= 0:
        return None
    from edgekd.tasks.causal_lm import CausalLM

    names = tuple(i.name for i in inputs.inputs if i.role != "past_key_values")
    return CausalLM(vocab_size=dims[2], max_length=tokens[0].shape[1], input_names=names)
