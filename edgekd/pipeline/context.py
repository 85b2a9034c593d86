"""`EngineContext`: what the engine-side stages (quantize, check, compile, evaluate, bench) may read:
the target, the profile, the model's inputs, calibration and evaluation data as named inputs, and
the provenance to stamp. Each kind of build provides one: edgekd.stages.context.Context (a
distillation build: a project) and edgekd.stages.compile_context.CompileContext (`edgekd compile`:
a trained ONNX model)."""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from edgekd.common.toolchain import cpu_model, usable_cores
from edgekd.config.loading import Resolved
from edgekd.config.models import Profile, QuantizeConfig
from edgekd.config.qnn import QnnConfig
from edgekd.config.target import Target, TargetQuantize
from edgekd.errors import ConfigError
from edgekd.graph.feeds import FeedSet
from edgekd.graph.inputs import ModelInputs
from edgekd.tasks.specs import ACCURACY, MetricSpec


class EngineContext(ABC):
    """The engine side's view of a build; subclasses say where the model and its data come from."""

    target_file: Resolved[Target]
    profile_file: Resolved[Profile]
    cache_root: Path

    # what each kind of build provides (a property or a field):
    name: str  # the project's or the model's name
    quantize_config: QuantizeConfig
    model_inputs: ModelInputs  # every model input at its resolved shape (batch 1)
    calib_feeds: FeedSet  # calibration data, named inputs
    eval_feeds: FeedSet  # evaluation data, named inputs (labels where known)
    data_fingerprint: str  # enters the cache keys
    distills: bool = False  # a distillation build (it has a teacher, a student's weights, a project)
    task_name: str = "image-classification"  # the registered task (edgekd.tasks) the model is built for
    task: Any = None  # the Task instance, where the build has one (a distillation build); its metric otherwise accuracy
    # causal-lm: the teacher's top-1 next tokens on the evaluation data (edgekd.pipeline.evaluation.TeacherTop1),
    # set by the evaluate stage so that the backend's evaluation reports the engine's agreement with it
    teacher_top1: Any = None
    # the positions the model declares (its config's max_position_embeddings), where the build knows them: a decoder
    # engine's rotary caches are cut to them (edgekd.graph.gqa_fusion); None: left as ONNX Runtime's optimizer made them
    max_positions: int | None = None
    # the model's transformers config (query heads, special token ids for onnxruntime-genai's folder), where the build has one
    model_config: Any = None

    @property
    def metric(self) -> MetricSpec:
        """The task's quality metric and its direction: what `<stage>.<metric.name>` numbers are, and
        which budgets (`*_accuracy_drop_pt` or `*_perplexity_increase_pct`) check them."""
        return ACCURACY

    @abstractmethod
    def provenance_props(self, stage: str, target: bool = False) -> dict[str, str]:
        """The edgekd.* metadata_props of a model written by `stage` (edgekd.graph.provenance)."""

    @abstractmethod
    def report_project(self) -> dict[str, Any]:
        """report.json's "project" object: what was built (name, file, sha256, via)."""

    @abstractmethod
    def report_sections(self, out_dir: Path) -> dict[str, Any]:
        """report.json's provenance, lineage and warnings."""

    # ------------------------------------------------ shared
    @property
    def target(self) -> Target:
        return self.target_file.config

    @property
    def profile(self) -> Profile:
        return self.profile_file.config

    @functools.cached_property
    def quant_recipe(self) -> TargetQuantize:
        """The target's Q/DQ recipe, with 16-bit activations where the project/profile asks."""
        recipe = self.target.quantize
        if self.quantize_config.activation_bits == 16:
            if self.target.runtime != "qnn-htp":
                raise ConfigError(f"quantize.activation_bits = 16: target {self.target_file.name} runs 8-bit activations only",
                                  "use 16-bit activations with a QNN HTP target, or remove activation_bits")
            recipe = recipe.model_copy(update={"activation_type": "uint16"})
        return recipe

    @property
    def qnn_config(self) -> QnnConfig:
        """The target's [qnn] table with the activation type of the quantization recipe."""
        return self.target.qnn.model_copy(update={"activation_type": self.quant_recipe.activation_type})

    @staticmethod
    def host_fingerprint() -> dict[str, Any]:
        """What a hardware-specific artefact or a latency number depends on."""
        return {"cpu": cpu_model(), "cores": usable_cores()}
