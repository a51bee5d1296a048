"""The one inference path: a network ready on the hardware (eval mode, placed, maybe compiled), and its
forward pass without gradients under the run's autocast. Evaluation, prediction, the inference-time
measurement and the benchmark all predict through it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from xtask.common.config import DatasetConfig
from xtask.common.methods import METHODS, Method
from xtask.core.hardware import Hardware
from xtask.core.model import XTaskOutput, build_model
from xtask.core.weights import Weights, trained_model


class Predictor:
    """``model`` on ``hw``, in eval mode; calling it predicts a batch of model inputs."""

    def __init__(self, model: torch.nn.Module, hw: Hardware, weights: Optional[Weights] = None):
        self.hw, self.weights = hw, weights
        self.model = hw.model(model).eval()

    @classmethod
    def from_checkpoint(cls, cfg: DatasetConfig, path: str | Path, hw: Hardware,
                        method: Optional[Method] = None) -> "Predictor":
        """The weights of ``path`` (either checkpoint format, checked against ``cfg``; ``method``: refuse
        another method's), in ``cfg``'s input convention; ``weights`` says what the file held."""
        model, weights = trained_model(cfg, path, method)
        return cls(model, hw, weights)

    @classmethod
    def random(cls, cfg: DatasetConfig, hw: Hardware, method: Method = METHODS["xtask"]) -> "Predictor":
        """A randomly initialised network of ``cfg``'s architecture (what timing needs: time does not
        depend on the weights)."""
        return cls(build_model(cfg.model, cfg.data.num_classes, method), hw)

    def __call__(self, image: torch.Tensor, *, with_transfer: bool = False) -> XTaskOutput:
        """Predictions for ``image`` (N, 3, H, W) on the device, as the model takes it; the direct ones only
        unless ``with_transfer`` (the TaskTransferNets' too)."""
        with torch.no_grad(), self.hw.autocast():
            return self.model(self.hw.input(image), with_transfer=with_transfer)
