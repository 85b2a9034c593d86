"""The data a project distills on. `Splits` (in-memory numpy splits) is what the built-in examples'
factories return; edgekd.data.sources streams batches of named arrays from any source."""
from __future__ import annotations

from edgekd.data.splits import Split, Splits, check_splits

__all__ = ["Split", "Splits", "check_splits"]
