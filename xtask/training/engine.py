"""One forward pass's loss terms and their combination per method; seeding."""
from __future__ import annotations

import random

import numpy as np
import torch

from xtask.core.batches import Batch
from xtask.common.config import DatasetConfig
from xtask.training.losses import loss_terms, task_losses
from xtask.common.methods import DEPTH, METHODS, SEG, Method
from xtask.core.model import XTaskOutput
from xtask.core.protocol import protocol_of


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def compute_terms(cfg: DatasetConfig, out: XTaskOutput, batch: Batch,
                  seg_denominator: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return loss_terms(out, batch.seg, batch.depth, batch.depth_mask, batch.seg_mask,
                      num_classes=cfg.num_classes, ignore_index=cfg.ignore_index,
                      label_smoothing=cfg.label_smoothing, lp=cfg.lp, tseg_loss=cfg.tseg_loss, tdep_loss=cfg.tdep_loss,
                      original_kl=not protocol_of(cfg).per_pixel_kl, seg_denominator=seg_denominator)


def combine(cfg: DatasetConfig, terms: dict[str, torch.Tensor], method: Method = METHODS["xtask"]
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(label loss, image loss) of ``method``; a task the method lacks contributes a zero."""
    if method.transfer:
        return task_losses(terms, alpha=cfg.alpha, gamma=cfg.gamma)
    zero = next(iter(terms.values())).new_zeros(())
    return terms.get(SEG, zero), terms.get(DEPTH, zero)
