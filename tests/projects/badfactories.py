"""Factories for tests of bad user input (imported by project files under tests/)."""
from __future__ import annotations


def not_splits(**_: object) -> dict:
    return {"train": [1, 2, 3]}
