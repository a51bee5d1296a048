"""The four XTask loss terms and their combination into the label and image losses.

Definitions follow tests/reference/fixtures/README.md (the original's numbers). The ``kl`` option is the
original's (which reshapes (N, C, H, W) with ``view(N, H*W, C)`` and so mixes classes with pixels) under
``protocol: original``, and a correct per-pixel KL divergence under ``protocol: corrected``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from xtask.common.config import LP_LOSSES, TDEP_LOSSES, TSEG_LOSSES, DataConfig, LossConfig
from xtask.common.methods import DEPTH, SEG, Method
from xtask.core.batches import Batch
from xtask.core.model import XTaskOutput
from xtask.core.protocol import Protocol



def _masked_image_mean(per_pixel: torch.Tensor, mask: torch.Tensor, denom_mask: Optional[torch.Tensor] = None
                       ) -> torch.Tensor:
    """Per image: sum of ``per_pixel * mask`` / sum of the mask; then the mean over the batch.

    An image without any valid pixel contributes 0 instead of NaN.
    """
    denom_mask = mask if denom_mask is None else denom_mask
    num = (per_pixel * mask).sum(dim=(1, 2, 3)) if mask is not None else per_pixel.sum(dim=(1, 2, 3))
    den = denom_mask.sum(dim=(1, 2, 3)).clamp_min(1)
    return (num / den).mean()


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    diff = pred - target
    if kind == "L1":
        per_pixel = diff.abs()
    elif kind == "MSE":
        per_pixel = diff.square()
    elif kind == "logL1":
        per_pixel = torch.log1p(diff.abs())
    elif kind == "smoothL1":
        per_pixel = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    else:
        raise ValueError(f"lp: expected one of {LP_LOSSES}, got {kind!r}")
    return _masked_image_mean(per_pixel, mask.to(pred.dtype))


def ssim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 on 3x3 windows (no padding) of the masked maps, per image over the mask's sum."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mask = mask.to(pred.dtype)
    x, y = pred * mask, target * mask
    pool = lambda t: F.avg_pool2d(t, kernel_size=3, stride=1)  # noqa: E731
    mu_x, mu_y = pool(x), pool(y)
    var_x = pool(x * x) - mu_x.square()
    var_y = pool(y * y) - mu_y.square()
    cov = pool(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2))
    per_pixel = torch.clamp((1 - ssim) / 2, 0, 1)
    return _masked_image_mean(per_pixel, None, denom_mask=mask)


def smoothed_targets(target: torch.Tensor, num_classes: int, smoothing: float, dtype: torch.dtype) -> torch.Tensor:
    """One-hot (N, C, H, W) with ``1 - e`` on the target class and ``e / (C - 1)`` on every other."""
    one_hot = F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(dtype)
    return one_hot * (1 - smoothing) + (1 - one_hot) * (smoothing / (num_classes - 1))


def transferred_seg_loss(logits: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], *,
                         num_classes: int, smoothing: float, kind: str) -> torch.Tensor:
    """Cross-entropy (or KL) of the transferred seg against a (smoothed) hard target.

    Masked pixels contribute 0 and the mean runs over all N*H*W pixels, as the original's.
    ``kl`` = cross - entropy(target): the same gradients, and 0 when the prediction equals the target.
    """
    q = smoothed_targets(target, num_classes, smoothing, logits.dtype)
    per_pixel = -(q * F.log_softmax(logits, dim=1)).sum(dim=1, keepdim=True)
    if kind == "kl":
        per_pixel = per_pixel + torch.xlogy(q, q).sum(dim=1, keepdim=True)
    elif kind != "cross":
        raise ValueError(f"tseg_loss: expected one of {TSEG_LOSSES}, got {kind!r}")
    if mask is not None:
        per_pixel = per_pixel * mask.to(per_pixel.dtype)
    return per_pixel.mean()


def original_kl_loss(logits: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor], *,
                     num_classes: int, smoothing: float) -> torch.Tensor:
    """The original's ``MaskedKLLoss``, defects included: (N, C, H, W) logits are reinterpreted as
    (N, H*W, C) by ``view`` (so a "pixel" is C consecutive values of one class's map), smoothed with
    e / (C - 2), masked, log-softmaxed over that last axis, and KL-divergence summed and divided by N."""
    n, c, h, w = logits.shape
    predicted = logits.contiguous().view(n, h * w, c)  # as the original's NCHW memory reads
    target = target.reshape(n, h * w, 1)
    mask = torch.ones_like(target, dtype=logits.dtype) if mask is None else mask.to(logits.dtype).reshape(n, h * w, 1)
    prob = torch.full((n, h * w, c), smoothing / (num_classes - 2), dtype=logits.dtype, device=logits.device)
    prob = prob.scatter(2, target, 1.0 - smoothing) * mask
    return F.kl_div(F.log_softmax(predicted * mask, dim=2), prob, reduction="batchmean")


@dataclass(frozen=True)
class LossSpec:
    """How the terms are computed: the ``loss`` section's choices, the labels' classes and ignore index, and
    whether the transferred-seg KL is the original's (``Protocol.per_pixel_kl`` off)."""
    num_classes: int
    ignore_index: int
    label_smoothing: float = 0.0
    lp: str = "L1"
    tseg_loss: str = "cross"
    tdep_loss: str = "L1"
    original_kl: bool = False

    @classmethod
    def of(cls, loss: LossConfig, data: DataConfig, protocol: Protocol) -> "LossSpec":
        return cls(data.num_classes, data.ignore_index, loss.label_smoothing, loss.lp, loss.tseg_loss, loss.tdep_loss,
                   original_kl=not protocol.per_pixel_kl)


def loss_terms(out: XTaskOutput, batch: Batch, spec: LossSpec, seg_denominator: Optional[torch.Tensor] = None
               ) -> dict[str, torch.Tensor]:
    """The four scalar loss terms.

    Transferred predictions are compared with the *detached* direct predictions: the transferred seg
    with the argmax of the direct seg, the transferred depth with the direct depth.
    The batch's targets: seg (N, H, W) int64; depth, depth_mask, seg_mask (N, 1, H, W); its image is not read.

    The seg term is a mean over the batch's labelled pixels, so a slice of a batch (a data-parallel
    rank's) cannot compute it alone: ``seg_denominator`` replaces the slice's labelled-pixel count
    (see ``xtask.training.train``), and None keeps PyTorch's own mean.
    """
    # Computed in fp32 whatever the autocast dtype, so that bf16 training sees the same losses (and in
    # float64 when the model is: the parity and trace checks). A single-task network has one of the two
    # outputs only (the other is None).
    seg_target, depth_target, depth_mask, seg_mask = batch.seg, batch.depth, batch.depth_mask, batch.seg_mask
    num_classes, ignore_index, label_smoothing = spec.num_classes, spec.ignore_index, spec.label_smoothing
    seg = _at_least_fp32(out.seg)
    depth = _at_least_fp32(out.depth)
    terms = {}
    if seg is not None:
        terms["seg"] = (F.cross_entropy(seg, seg_target, ignore_index=ignore_index) if seg_denominator is None else
                        F.cross_entropy(seg, seg_target, ignore_index=ignore_index, reduction="sum") / seg_denominator)
    if depth is not None:
        terms["depth"] = depth_loss(depth, depth_target, depth_mask, spec.lp)
    if out.seg_transferred is not None and spec.tseg_loss == "kl" and spec.original_kl:
        terms["seg_transferred"] = original_kl_loss(_at_least_fp32(out.seg_transferred), seg.detach().argmax(dim=1), seg_mask,
                                                    num_classes=num_classes, smoothing=label_smoothing)
    elif out.seg_transferred is not None:
        terms["seg_transferred"] = transferred_seg_loss(
            _at_least_fp32(out.seg_transferred), seg.detach().argmax(dim=1), seg_mask,
            num_classes=num_classes, smoothing=label_smoothing, kind=spec.tseg_loss)
    if out.depth_transferred is not None:
        pred_t, ref = _at_least_fp32(out.depth_transferred), depth.detach()
        if spec.tdep_loss == "L1":
            terms["depth_transferred"] = depth_loss(pred_t, ref, depth_mask, "L1")
        elif spec.tdep_loss.upper() == "SSIM":  # the original spells it "ssim"
            terms["depth_transferred"] = ssim_loss(pred_t, ref, depth_mask)
        else:
            raise ValueError(f"tdep_loss: expected one of {TDEP_LOSSES}, got {spec.tdep_loss!r}")
    return terms


def _at_least_fp32(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Half precision up to fp32; fp32 and float64 as they are."""
    return x.float() if x is not None and x.dtype in (torch.float16, torch.bfloat16) else x


def task_losses(terms: dict[str, torch.Tensor], *, alpha: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(label_loss, image_loss) as the original combines them.

    ``alpha`` weighs the transferred depth into the label loss (its gradient reaches the seg decoder
    through the seg->depth TTNet); ``gamma`` weighs the transferred seg into the image loss.
    """
    label = (1 - alpha) * terms["seg"] + alpha * terms["depth_transferred"]
    image = (1 - gamma) * terms["depth"] + gamma * terms["seg_transferred"]
    return label, image


@dataclass(frozen=True)
class Objective:
    """What one run minimises, worked out once: its method's loss terms and their (label, image) losses."""
    spec: LossSpec
    alpha: float
    gamma: float
    method: Method

    @classmethod
    def of(cls, loss: LossConfig, data: DataConfig, protocol: Protocol, method: Method) -> "Objective":
        return cls(LossSpec.of(loss, data, protocol), loss.alpha, loss.gamma, method)

    def terms(self, out: XTaskOutput, batch: Batch, seg_denominator: Optional[torch.Tensor] = None
              ) -> dict[str, torch.Tensor]:
        return loss_terms(out, batch, self.spec, seg_denominator)

    def combine(self, terms: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(label loss, image loss) of the method; a task the method lacks contributes a zero."""
        if self.method.transfer:
            return task_losses(terms, alpha=self.alpha, gamma=self.gamma)
        zero = next(iter(terms.values())).new_zeros(())
        return terms.get(SEG, zero), terms.get(DEPTH, zero)
