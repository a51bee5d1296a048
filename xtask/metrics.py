"""Evaluation metrics, in two named families.

``paper``: the definitions behind the published tables (the original's Logger, from MTAN): per-image
mIoU and pixel accuracy averaged over images; depth Abs and AbsRel per batch, batch-size weighted.
``standard``: dataset-level confusion-matrix mIoU and pixel accuracy; pixel-weighted depth errors.
Both accumulate on the device of the predictions; nothing leaves it until ``compute``.
"""
from __future__ import annotations

import torch


def _depth_inputs(depth_pred: torch.Tensor, depth_target: torch.Tensor):
    pred, target = depth_pred.detach().float(), depth_target.float()
    valid = target > 0
    return pred, target, valid


class PaperMetrics:
    """mIoU, PixAcc, Abs, AbsRel exactly as the original computes them (fractions, not percent)."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._sums: torch.Tensor | None = None  # [miou, pix_acc, abs*n, rel*n, images]

    def update(self, seg_logits: torch.Tensor, depth_pred: torch.Tensor, seg_target: torch.Tensor,
               depth_target: torch.Tensor) -> None:
        n = seg_logits.shape[0]
        pred = seg_logits.detach().argmax(dim=1)
        counted = seg_target != self.ignore_index
        # Pixel accuracy: correct pixels (an ignored target never equals a class) / non-ignored pixels.
        pix_acc = (pred == seg_target).flatten(1).sum(1).double() / counted.flatten(1).sum(1).clamp_min(1).double()
        # Per-image IoU per class; union counts only non-ignored pixels, intersection counts all.
        classes = torch.arange(self.num_classes, device=pred.device).view(1, -1, 1)
        p = pred.flatten(1).unsqueeze(1) == classes
        t = seg_target.flatten(1).unsqueeze(1) == classes
        inter = (p & t).sum(2).double()
        union = ((p | t) & counted.flatten(1).unsqueeze(1)).sum(2).double()
        present = union > 0
        iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
        miou = iou.sum(1) / present.sum(1).clamp_min(1)
        dp, dt, valid = _depth_inputs(depth_pred, depth_target)
        err = (dp - dt).abs()
        count = valid.sum().clamp_min(1).double()
        abs_err = (err * valid).sum().double() / count
        rel_err = (err / dt.where(valid, torch.ones_like(dt)) * valid).sum().double() / count
        batch = torch.stack([miou.sum(), pix_acc.sum(), abs_err * n, rel_err * n,
                             torch.tensor(float(n), dtype=torch.float64, device=pred.device)])
        self._sums = batch if self._sums is None else self._sums + batch

    def compute(self) -> dict[str, float]:
        if self._sums is None:
            raise ValueError("PaperMetrics.compute() before any update()")
        miou, pix, abs_n, rel_n, n = self._sums.tolist()
        return {"miou": miou / n, "pix_acc": pix / n, "abs_err": abs_n / n, "rel_err": rel_n / n}


class StandardMetrics:
    """Dataset-level confusion matrix and pixel-weighted depth errors (fractions, not percent)."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._confusion: torch.Tensor | None = None
        self._depth: torch.Tensor | None = None  # [sum abs, sum rel, sum sq, d1, d2, d3, count]

    def update(self, seg_logits: torch.Tensor, depth_pred: torch.Tensor, seg_target: torch.Tensor,
               depth_target: torch.Tensor) -> None:
        c = self.num_classes
        pred = seg_logits.detach().argmax(dim=1).flatten()
        target = seg_target.flatten()
        keep = (target != self.ignore_index) & (target >= 0) & (target < c)
        conf = torch.bincount(target[keep] * c + pred[keep], minlength=c * c).view(c, c)
        self._confusion = conf if self._confusion is None else self._confusion + conf
        dp, dt, valid = _depth_inputs(depth_pred, depth_target)
        dp, dt = dp[valid].double(), dt[valid].double()
        err = (dp - dt).abs()
        ratio = torch.maximum(dp / dt, dt / dp.clamp_min(1e-9))
        ratio = torch.where(dp > 0, ratio, torch.full_like(ratio, float("inf")))
        sums = torch.stack([err.sum(), (err / dt).sum(), err.square().sum(),
                            (ratio < 1.25).sum().double(), (ratio < 1.25 ** 2).sum().double(),
                            (ratio < 1.25 ** 3).sum().double(), torch.tensor(float(dt.numel()), dtype=torch.float64,
                                                                             device=dt.device)])
        self._depth = sums if self._depth is None else self._depth + sums

    def compute(self) -> dict[str, float]:
        if self._confusion is None:
            raise ValueError("StandardMetrics.compute() before any update()")
        conf = self._confusion.double()
        inter = conf.diag()
        union = conf.sum(0) + conf.sum(1) - inter
        present = union > 0
        miou = (inter[present] / union[present]).mean().item() if present.any() else 0.0
        pix_acc = (inter.sum() / conf.sum().clamp_min(1)).item()
        s_abs, s_rel, s_sq, d1, d2, d3, n = self._depth.tolist()
        n = max(n, 1.0)
        return {"miou": miou, "pix_acc": pix_acc, "abs_err": s_abs / n, "rel_err": s_rel / n,
                "rmse": (s_sq / n) ** 0.5, "delta1": d1 / n, "delta2": d2 / n, "delta3": d3 / n,
                "iou_per_class": (inter / union.clamp_min(1)).tolist()}
