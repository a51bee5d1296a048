"""Stable import path for scripts outside the pipeline: the model lives in ``xtask.training.model``."""
from xtask.training.model import XTaskNet, XTaskOutput, convert_original_state_dict

__all__ = ["XTaskNet", "XTaskOutput", "convert_original_state_dict"]
