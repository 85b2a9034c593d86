"""Runtimes that run the exported student: one module per runtime, picked by `get`."""
from edgekd.backends.base import get

__all__ = ["get"]
