"""Distillation: losses and the training loop (torch imported only here)."""
