"""`Context`: what the stages of a distillation build read: the project (teacher, student, data) under
a target and a profile, on top of the engine stages' EngineContext."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.factories import call
from edgekd.config.loading import Resolved
from edgekd.config.models import Profile, Project, QuantizeConfig, apply_recipe
from edgekd.config.target import Target
from edgekd.data import Splits, check_splits
from edgekd.distill import provenance as build_provenance
from edgekd.graph.export import (
    INPUT_NAME,  # the one input of the students edgekd exports
)
from edgekd.graph.feeds import FeedSet
from edgekd.graph.inputs import ModelInputs, ResolvedInput
from edgekd.pipeline.context import EngineContext


@dataclass
class Context(EngineContext):
    """A distillation build: the project (teacher, student, data) under a target and a profile."""

    distills = True

    project_file: Resolved[Project]
    target_file: Resolved[Target]
    profile_file: Resolved[Profile]
    cache_root: Path = Path(".")  # the stage cache; other caches (teacher logits) live beside the stages

    @functools.cached_property
    def project(self) -> Project:
        """The project with the profile's recipe applied."""
        return apply_recipe(self.project_file.config, self.profile_file.config.recipe)

    @property
    def name(self) -> str:
        return self.project.name

    @property
    def quantize_config(self) -> QuantizeConfig:
        return self.project.quantize

    @property
    def source(self) -> str:
        return str(self.project_file.path)

    @functools.cached_property
    def data(self) -> Splits:
        cfg = self.project.data
        value = call(cfg.factory, cfg.args, "data.factory", self.source)
        return check_splits(value, f"{self.source}: data.factory '{cfg.factory}'")

    @functools.cached_property
    def data_sha256(self) -> str:
        return self.data.sha256()

    @property
    def data_fingerprint(self) -> str:
        return self.data_sha256

    @property
    def model_inputs(self) -> ModelInputs:
        """The exported student's one input (edgekd.graph.export): float32, batch 1 at the data's shape."""
        shape = (1, *self.data.input_shape)
        return ModelInputs((ResolvedInput(INPUT_NAME, "float32", shape, "image" if len(shape) == 4 else "float",
                                          ("batch 1", *["the project's data"] * (len(shape) - 1)), batch_axis=0),))

    @functools.cached_property
    def calib_feeds(self) -> FeedSet:
        calib = self.data.calib
        return FeedSet({INPUT_NAME: calib.x}, calib.y, f"the {len(calib)} samples of the project's calibration split")

    @functools.cached_property
    def eval_feeds(self) -> FeedSet:
        test = self.data.test
        return FeedSet({INPUT_NAME: test.x}, test.y, f"the {len(test)} held-out test samples")

    def provenance_props(self, stage: str, target: bool = False) -> dict[str, str]:
        from edgekd.distill import provenance as build_provenance

        return build_provenance.props(self, stage, target)

    def build_model(self, role: str) -> Any:
        """The teacher or student module from its factory (untrained weights)."""
        cfg = getattr(self.project, role)
        return self.build_model_from(cfg.factory, cfg.args, f"{role}.factory")

    def build_model_from(self, factory: str, args: dict[str, Any], key: str, seed: int = 0) -> Any:
        """A module from a factory, with torch seeded first so that its initial weights are the
        same in every process and build (the stage cache assumes it)."""
        import torch

        torch.manual_seed(seed)
        return call(factory, args, key, self.source)

    def report_project(self) -> dict[str, Any]:
        f = self.project_file
        return {"name": f.name, "file": str(f.path), "sha256": f.sha256, "via": f.via, "description": self.project.description}

    def report_sections(self, out_dir: Path) -> dict[str, Any]:
        return build_provenance.report_sections(self, out_dir)

    def resolve_path(self, relative: str) -> Path:
        """A path from the project file, taken relative to the file's folder."""
        return (self.project_file.path.parent / relative).resolve()
