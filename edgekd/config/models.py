"""Two of the three inputs: Project (what to distill) and Profile (what the team demands). The third,
Target (what the hardware is), is in config/target.py. Unknown keys are rejected everywhere."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgekd.config.strict import Strict

FACTORY_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class TrainConfig(Strict):
    """Supervised training of a teacher from the project's data."""

    epochs: int = Field(20, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class TeacherConfig(Strict):
    factory: str = Field(pattern=FACTORY_PATTERN, description="'package.module:function' returning a torch.nn.Module")
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="safetensors file with the trained weights")
    train: TrainConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if (self.checkpoint is None) == (self.train is None):
            raise ValueError("give exactly one of 'checkpoint' (trained weights) or [teacher.train] (train it here)")
        return self


class StudentConfig(Strict):
    factory: str = Field(pattern=FACTORY_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)


class DataConfig(Strict):
    factory: str = Field(pattern=FACTORY_PATTERN, description="returns edgekd.data.Splits")
    args: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(Strict):
    kind: Literal["classification"] = "classification"
    metric: Literal["accuracy"] = "accuracy"


class DistillConfig(Strict):
    """Hinton KD: alpha * T^2 * KL(student_T || teacher_T) + (1 - alpha) * CE(student, label)."""

    method: Literal["hinton"] = "hinton"
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.9, ge=0, le=1)
    epochs: int = Field(40, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    seed: int = 0


class QuantizeConfig(Strict):
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    activation_bits: Literal[8, 16] = Field(8, description="16: uint16 activations, on targets that run them (QNN HTP)")
    calibration_samples: int = Field(256, ge=1)
    seed: int = 0


class Project(Strict):
    name: str
    description: str = ""
    teacher: TeacherConfig
    student: StudentConfig
    data: DataConfig
    task: TaskConfig = TaskConfig()
    distill: DistillConfig = DistillConfig()
    quantize: QuantizeConfig = QuantizeConfig()


# ---------------------------------------------------------------- profile (profiles/*.toml)


class Budgets(Strict):
    """Limits checked after each stage. A budget left out is reported as 'no budget', except three
    correctness checks that hold whatever the team's budgets: the export parity tolerance (1e-4),
    the target's quantization rules (0 violations) and nodes nothing on the target runs (0)."""

    distill_accuracy_drop_pt: float | None = Field(None, ge=0, description="teacher - student (torch)")
    export_parity_max_abs_diff: float | None = Field(1e-4, gt=0, description="ONNX Runtime vs torch logits")
    export_accuracy_drop_pt: float | None = Field(None, ge=0, description="student (torch) - ONNX fp32")
    quantize_accuracy_drop_pt: float | None = Field(None, ge=0, description="ONNX fp32 - INT8 ONNX")
    quantize_rule_violations: int | None = Field(0, ge=0, description="Q/DQ nodes that break the target's quantization rules")
    fallback_nodes_pct: float | None = Field(None, ge=0, le=100, description="nodes off the accelerator, % of all")
    fallback_macs_pct: float | None = Field(None, ge=0, le=100, description="MACs off the accelerator, % of all")
    unsupported_nodes: int | None = Field(0, ge=0, description="nodes nothing on the target can run")
    overall_accuracy_drop_pt: float | None = Field(None, ge=0, description="teacher - engine")
    size_mb: float | None = Field(None, gt=0, description="deployed model file size")
    latency_p90_ms: float | None = Field(None, gt=0, description="engine p90 at batch 1")


class BenchConfig(Strict):
    """How long the latency measurement runs: until p90 is stable, within these bounds."""

    warmup_runs: int = Field(50, ge=0)
    min_runs: int = Field(300, ge=10)
    max_runs: int = Field(20000, ge=10)
    max_seconds: float = Field(10.0, gt=0)
    stable_rel_change: float = Field(0.02, gt=0, description="stop when p90 moves less than this between rounds")

    @model_validator(mode="after")
    def _bounds(self) -> BenchConfig:
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) is below min_runs ({self.min_runs})")
        return self


class Recipe(Strict):
    """Overrides of the project's stage settings, e.g. fewer epochs for CI. `teacher_train`
    applies only to projects that train their teacher (it is ignored for a teacher checkpoint)."""

    teacher_train: dict[str, Any] = Field(default_factory=dict)
    distill: dict[str, Any] = Field(default_factory=dict)
    quantize: dict[str, Any] = Field(default_factory=dict)
    bench: BenchConfig = BenchConfig()

    @field_validator("teacher_train", "distill", "quantize")
    @classmethod
    def _known_keys(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        model = _RECIPE_SECTIONS[info.field_name]
        try:
            model.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"'{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
            raise ValueError(problems) from None
        return value


_RECIPE_SECTIONS: dict[str, type[BaseModel]] = {
    "teacher_train": TrainConfig,
    "distill": DistillConfig,
    "quantize": QuantizeConfig,
}


class Profile(Strict):
    description: str = ""
    budgets: Budgets = Budgets()
    recipe: Recipe = Recipe()


def apply_recipe(project: Project, recipe: Recipe) -> Project:
    """The project as the profile's recipe overrides it (validated again)."""
    data = project.model_dump()
    if recipe.teacher_train and data["teacher"]["train"] is not None:
        data["teacher"]["train"].update(recipe.teacher_train)
    data["distill"].update(recipe.distill)
    data["quantize"].update(recipe.quantize)
    return Project.model_validate(data)
