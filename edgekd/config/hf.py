"""[teacher.hf] / [student.hf]: a Hugging Face transformers model as teacher or student (made by
edgekd.distill.hf_models)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

HfInit = Literal["random", "teacher"]


class HfModelSpec(BaseModel):
    """A Hugging Face transformers model (edgekd.distill.hf_models), from exactly one of: `path`, a
    local model folder (save_pretrained; loaded with from_pretrained, never from the hub); `base =
    "teacher"` (students: the teacher's config); `model_type` (a fresh config of that type, e.g.
    "bert"). Every other key overrides a field of that config (num_hidden_layers = 4, hidden_size =
    256, ...) and must be one the config has. `init = "teacher"` (students of `base = "teacher"`):
    start from the teacher's weights as DistilBERT did: embeddings and head copied, and every k-th
    of the teacher's layers for the student's layers."""

    model_config = ConfigDict(extra="allow", frozen=True)

    path: str | None = Field(None, description="a local model folder (config.json + weights), relative to the project file")
    base: Literal["teacher"] | None = Field(None, description="students: the teacher's Hugging Face config, with these overrides")
    model_type: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]*$", description="a fresh transformers config of this type")
    init: HfInit = Field("random", description="students: 'teacher' starts from the teacher's weights (DistilBERT-style)")

    @model_validator(mode="after")
    def _one_source(self) -> HfModelSpec:
        given = [k for k in ("path", "base", "model_type") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'path', 'base' or 'model_type' (got {', '.join(given) or 'none'})")
        if self.init == "teacher" and self.base != "teacher":
            raise ValueError("init = 'teacher' needs base = 'teacher' (the student copies layers of the teacher's architecture)")
        bad = [k for k, v in self.overrides().items() if not isinstance(v, (int, float, str, bool, list))]
        if bad:
            raise ValueError(f"config overrides must be numbers, strings, booleans or lists: {', '.join(bad)}")
        return self

    def overrides(self) -> dict[str, Any]:
        """The keys beyond path/base/model_type/init: fields of the transformers config to set."""
        return dict(self.model_extra or {})
