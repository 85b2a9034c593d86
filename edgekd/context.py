"""Everything a stage may read: the resolved project, target and profile, and the data."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.config.loading import Resolved
from edgekd.backends.qnn_config import QnnConfig
from edgekd.config.models import Profile, Project, apply_recipe
from edgekd.config.target import Target, TargetQuantize
from edgekd.errors import ConfigError
from edgekd.data import Splits, check_splits
from edgekd.factories import call
from edgekd.toolchain import cpu_model, usable_cores


@dataclass
class Context:
    project_file: Resolved[Project]
    target_file: Resolved[Target]
    profile_file: Resolved[Profile]
    cache_root: Path = Path(".")  # the stage cache; other caches (teacher logits) live beside the stages

    @functools.cached_property
    def project(self) -> Project:
        """The project with the profile's recipe applied."""
        return apply_recipe(self.project_file.config, self.profile_file.config.recipe)

    @functools.cached_property
    def quant_recipe(self) -> TargetQuantize:
        """The target's Q/DQ recipe, with 16-bit activations where the project/profile asks."""
        recipe = self.target.quantize
        if self.project.quantize.activation_bits == 16:
            if self.target.runtime != "qnn-htp":
                raise ConfigError(f"quantize.activation_bits = 16: target {self.target_file.name} runs 8-bit activations only",
                                  "use 16-bit activations with a QNN HTP target, or remove activation_bits")
            recipe = recipe.model_copy(update={"activation_type": "uint16"})
        return recipe

    @property
    def qnn_config(self) -> QnnConfig:
        """The target's [qnn] table with the activation type of the quantization recipe."""
        return self.target.qnn.model_copy(update={"activation_type": self.quant_recipe.activation_type})

    @property
    def target(self) -> Target:
        return self.target_file.config

    @property
    def profile(self) -> Profile:
        return self.profile_file.config

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

    def resolve_path(self, relative: str) -> Path:
        """A path from the project file, taken relative to the file's folder."""
        return (self.project_file.path.parent / relative).resolve()

    @staticmethod
    def host_fingerprint() -> dict[str, Any]:
        """What a hardware-specific artefact or a latency number depends on."""
        return {"cpu": cpu_model(), "cores": usable_cores()}
