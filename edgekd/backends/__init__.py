"""Runtimes that run the exported student: one module per runtime."""
