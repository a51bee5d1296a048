"""Stable import path for scripts outside the pipeline: the metrics live in ``xtask.common.metrics``."""
from xtask.common.metrics import PaperMetrics, StandardMetrics

__all__ = ["PaperMetrics", "StandardMetrics"]
