"""`Context`: what the stages of a distillation build read: the project (teacher, student, data) under
a target and a profile, on top of the engine stages' EngineContext."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.common.factories import call
from edgekd.config.loading import Resolved
from edgekd.config.models import Profile, Project, QuantizeConfig, apply_recipe
from edgekd.config.target import Target
from edgekd.data.load import open_source
from edgekd.data.sources import INDEX, LABELS, DataSource, read_split
from edgekd.data.views import has_teacher_view, teacher_view
from edgekd.distill import provenance as build_provenance
from edgekd.errors import ConfigError
from edgekd.graph.feeds import FeedSet
from edgekd.graph.inputs import ModelInputs
from edgekd.pipeline.context import EngineContext
from edgekd.tasks.specs import MetricSpec

if TYPE_CHECKING:
    from edgekd.data.augment import Augment
    from edgekd.distill.streaming import TrainData
    from edgekd.tasks.base import Task


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
    def data_source(self) -> DataSource:
        """The project's data, streamed (edgekd.data.load.open_source): nothing reads the train split
        into memory; the calibration and test splits are read when the engine stages need them."""
        return open_source(self.project.data, self.project_file.path.parent, self.source)

    @functools.cached_property
    def data_sha256(self) -> str:
        """The data's fingerprint, computed while streaming it once (edgekd.data.sources)."""
        return self.data_source.fingerprint()

    @property
    def data_fingerprint(self) -> str:
        return self.data_sha256

    @functools.cached_property
    def task(self) -> Task:
        """The project's [task] (a registered task, edgekd.tasks) with the dims the data gives, and
        [task] args over them."""
        from edgekd.tasks import get_task, task_class

        cfg, key = self.project.task, f"{self.source}: key 'task"
        try:
            cls = task_class(cfg.kind)
            task = get_task(cfg.kind, **(cls.dims_from_data(self.data_source.spec()) | cfg.args))
        except ConfigError as exc:
            raise ConfigError(f"{key}': {exc.args[0]}", exc.hint) from None
        if cfg.metric is not None and cfg.metric != task.metric.name:
            raise ConfigError(f"{key}.metric' = '{cfg.metric}': task {task.name} is measured by {task.metric.name}",
                              f"remove [task] metric or set it to '{task.metric.name}'")
        return task

    @property
    def task_name(self) -> str:  # type: ignore[override]
        return self.task.name

    @property
    def metric(self) -> MetricSpec:
        """The task's metric, from its class (reads no data: --dry-run shows it)."""
        from edgekd.tasks import task_class

        return task_class(self.project.task.kind).metric

    @functools.cached_property
    def augment(self) -> Augment | None:
        """The train split's augmentations (edgekd.data.augment), or None."""
        from edgekd.data.augment import build_augment

        return build_augment(self.project.data.augment)

    def augment_key(self) -> dict[str, Any]:
        """The augmentations' identity for the cache keys of the stages that train ({} without any)."""
        return {} if self.augment is None else {"augment": self.augment.identity()}

    @property
    def train_data(self) -> TrainData:
        """What the training stages stream: the train split, the task, the augmentations."""
        from edgekd.distill.streaming import TrainData

        return TrainData(self.data_source, self.task, self.augment)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, for the image students edgekd builds and searches."""
        shape = getattr(self.task, "input_shape", None)
        if shape is None:
            raise ConfigError(f"{self.source}: the student search and edgekd's own students take images; task {self.task.name} has none",
                              "give [student] factory a model for this task")
        return tuple(shape)

    @property
    def num_classes(self) -> int:
        return int(self.task.classes)  # type: ignore[attr-defined]

    @property
    def model_inputs(self) -> ModelInputs:
        """The task's inputs at batch 1 (the exported student's inputs)."""
        return self.task.model_inputs(batch=1)

    def _feeds(self, split: str, limit: int | None, what: str) -> FeedSet:
        arrays = read_split(self.data_source, split, limit)
        labels = arrays.pop(LABELS, None)
        names = [s.name for s in self.task.inputs()]
        if split == "test" and has_teacher_view(arrays):  # cross-input: the teacher is evaluated on its own view
            self.__dict__["_teacher_eval"] = teacher_view({n: a for n, a in arrays.items() if n != INDEX})
        return FeedSet({n: arrays[n] for n in names if n in arrays}, labels, f"the {len(next(iter(arrays.values())))} {what}")

    @property
    def teacher_eval_arrays(self) -> dict[str, Any]:
        """The test split as the teacher reads it (its own view in cross-input distillation)."""
        feeds = self.eval_feeds  # reads the test split, and the teacher's view of it where the data has one
        return self.__dict__.get("_teacher_eval", feeds.arrays)

    @functools.cached_property
    def teacher_task(self) -> Any:
        """The task with the teacher's dims: its own sequence length when it reads its own view."""
        import dataclasses

        length = self.project.data.teacher_max_length
        return dataclasses.replace(self.task, max_length=length) if length and hasattr(self.task, "max_length") else self.task

    @functools.cached_property
    def calib_feeds(self) -> FeedSet:
        return self._feeds("calib", None, "samples of the project's calibration split")

    @functools.cached_property
    def eval_feeds(self) -> FeedSet:
        return self._feeds("test", None, "held-out test samples")

    def provenance_props(self, stage: str, target: bool = False) -> dict[str, str]:
        from edgekd.distill import provenance as build_provenance

        return build_provenance.props(self, stage, target)

    @functools.cached_property
    def max_positions(self) -> int | None:  # type: ignore[override]
        """The positions the student's Hugging Face config declares (max_position_embeddings), or None
        (a factory's own module declares none)."""
        positions = getattr(self.model_config, "max_position_embeddings", None)
        return positions if isinstance(positions, int) else None

    @functools.cached_property
    def model_config(self) -> Any:  # type: ignore[override]
        """The student's transformers config ([student.hf], overrides applied), or None (a factory's module)."""
        if getattr(self.project.student, "hf", None) is None:
            return None
        from edgekd.distill.hf_models import base_config

        return base_config(self._hf_spec(self.project.student, "student"))

    def build_model(self, role: str) -> Any:
        """The teacher or student module from its factory or [role.hf] (untrained weights; a
        Hugging Face model folder's own weights)."""
        return self.build_model_from(*self.factory_of(getattr(self.project, role), role))

    def factory_of(self, spec: Any, key: str) -> tuple[str, dict[str, Any], str]:
        """(factory, args, config key) that make the model of a teacher or student table `spec` at
        config `key`: its own factory, or for [key.hf] edgekd's transformers builder with the table
        resolved (edgekd.distill.hf_models: folders absolute and hashed, `base` expanded)."""
        if getattr(spec, "hf", None) is None:
            return spec.factory, spec.args, f"{key}.factory"
        from edgekd.distill.hf_models import FACTORY

        return FACTORY, {"spec": self._hf_spec(spec, key), "task": self.task.name}, f"{key}.hf"

    def _hf_spec(self, spec: Any, key: str) -> dict[str, Any]:
        """The [key.hf] table `spec.hf` resolved (edgekd.distill.hf_models.resolve), once per build:
        resolving hashes a folder's weights."""
        from edgekd.distill.hf_models import resolve

        resolved = self.__dict__.setdefault("_hf_resolved", {})
        if key not in resolved:
            resolved[key] = resolve(spec.hf, f"{key}.hf", self.project_file.path.parent, self.project.teacher.hf)
            if key == "teacher" and self.project.distill.vocab_alignment != "none":  # it reads its own vocabulary, not the data's
                resolved[key]["own_vocabulary"] = True
        return resolved[key]

    def build_model_from(self, factory: str, args: dict[str, Any], key: str, seed: int = 0) -> Any:
        """A module from a factory, with torch seeded first so that its initial weights are the
        same in every process and build (the stage cache assumes it). The task's dims (num_classes,
        input_shape, vocab_size, num_labels, max_length, ...) fill the factory's parameters of those
        names that `args` leave out."""
        import dataclasses

        import torch

        torch.manual_seed(seed)
        task = self.teacher_task if key.split(".")[0] == "teacher" and not key.startswith("teacher.assistants") else self.task
        dims = {f.name: getattr(task, f.name) for f in dataclasses.fields(task)}
        return call(factory, args, key, self.source, defaults=dims)

    def report_project(self) -> dict[str, Any]:
        f = self.project_file
        return {"name": f.name, "file": str(f.path), "sha256": f.sha256, "via": f.via, "description": self.project.description}

    def report_sections(self, out_dir: Path) -> dict[str, Any]:
        return build_provenance.report_sections(self, out_dir)

    def resolve_path(self, relative: str) -> Path:
        """A path from the project file, taken relative to the file's folder."""
        return (self.project_file.path.parent / relative).resolve()
