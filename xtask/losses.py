"""Stable import path for scripts outside the pipeline: the losses live in ``xtask.training.losses``."""
from xtask.training.losses import loss_terms, task_losses

__all__ = ["loss_terms", "task_losses"]
