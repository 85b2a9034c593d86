"""Where every resolved setting of a build came from: the project file, the profile (its recipe
overriding the project, or its own budgets/bench/tune/gate), the target file, or edgekd's default.

`settings(project, target, profile)` walks the three validated configs (pydantic remembers which
fields a file set: `model_fields_set`) and the recipe's overrides; `overrides(...)` lists the recipe
values that change what the project file says (the build log prints them)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgekd.config.loading import Resolved
from edgekd.config.models import Profile, Project
from edgekd.config.target import Target

RECIPE_SECTIONS = {"teacher_train": ("teacher", "train"), "distill": ("distill",), "quantize": ("quantize",)}


def _leaves(model: BaseModel, origin: str, prefix: str, out: dict[str, dict[str, Any]]) -> None:
    for name in type(model).model_fields:
        value, path = getattr(model, name), f"{prefix}{name}"
        where = origin if name in model.model_fields_set else "default"
        if isinstance(value, BaseModel):
            _leaves(value, origin if where != "default" else "default", f"{path}.", out)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            for i, item in enumerate(value):
                _leaves(item, where, f"{path}[{i}].", out)
        else:
            out[path] = {"value": value, "from": where}


def _section(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None  # type: ignore[assignment]
    return data


def overrides(project: Resolved[Project], profile: Resolved[Profile]) -> list[dict[str, Any]]:
    """The profile recipe's values for project settings: each with the project's own value (set in
    the project file, or its default) and whether it changes it."""
    given = project.config.model_dump()
    rows = []
    for section, keys in RECIPE_SECTIONS.items():
        current = _section(given, keys)
        if current is None:  # e.g. teacher_train for a teacher that is not trained here: ignored
            continue
        for key, value in getattr(profile.config.recipe, section).items():
            rows.append({"setting": f"project.{'.'.join(keys)}.{key}", "value": value, "project_value": current.get(key),
                         "changes": current.get(key) != value, "by": f"profile {profile.name} [recipe.{section}] ({profile.path})"})
    return rows


def settings(project: Resolved[Project], target: Resolved[Target], profile: Resolved[Profile]) -> dict[str, dict[str, Any]]:
    """Every resolved setting, by dotted path ("project.distill.epochs", "target.session.intra_op_num_threads",
    "profile.budgets.latency_p90_ms"), with its value and where it came from: "project", "profile",
    "target" or "default" (and for a recipe override, which file and the project's own value)."""
    out: dict[str, dict[str, Any]] = {}
    _leaves(project.config, "project", "project.", out)
    _leaves(target.config, "target", "target.", out)
    _leaves(profile.config, "profile", "profile.", out)
    for row in overrides(project, profile):
        out[row["setting"]] = {"value": row["value"], "from": "profile", "by": row["by"], "project_value": row["project_value"]}
    return out


def describe_overrides(project: Resolved[Project], profile: Resolved[Profile]) -> list[str]:
    """Build-log lines for the recipe values that change what the project says."""
    return [f"{row['by'].split(' (')[0]} sets {row['setting'].removeprefix('project.')} = {row['value']!r} "
            f"(the project's {row['project_value']!r})" for row in overrides(project, profile) if row["changes"]]
