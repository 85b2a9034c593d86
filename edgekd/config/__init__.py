"""Project, target and profile configs: models and loading."""
from edgekd.config.loading import (
    BUILTIN_EXAMPLE,
    ConfigSearch,
    Resolved,
    load_profile,
    load_project,
    load_target,
)
from edgekd.config.models import Budgets, Profile, Project
from edgekd.config.target import Target

__all__ = [
    "BUILTIN_EXAMPLE",
    "Budgets",
    "ConfigSearch",
    "Profile",
    "Project",
    "Resolved",
    "Target",
    "load_profile",
    "load_project",
    "load_target",
]
