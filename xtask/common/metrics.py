"""Evaluation metrics, in two named families.

``paper``: the definitions behind the published tables (the original's Logger, from MTAN): per-image
mIoU and pixel accuracy averaged over images; depth Abs and AbsRel per batch, batch-size weighted.
``standard``: dataset-level confusion-matrix mIoU and pixel accuracy; pixel-weighted depth errors.
Both accumulate on the device of the predictions; nothing leaves it until ``compute``.
"""
from __future__ import annotations

import numpy as np
import torch


def _depth_inputs(depth_pred: torch.Tensor, depth_target: torch.Tensor):
    pred, target = depth_pred.detach().float(), depth_target.float()
    valid = target > 0
    return pred, target, valid


def per_image_confusion(seg_logits: torch.Tensor, seg_target: torch.Tensor, num_classes: int,
                        ignore_index: int) -> torch.Tensor:
    """(N, C, C) confusion matrices, [image, target, prediction], over the non-ignored pixels.

    One bincount for the whole batch: a pixel's bin is image * C*C + target * C + prediction, and
    ignored pixels go to one extra bin that is dropped.
    """
    n, c = seg_logits.shape[0], num_classes
    # max().indices, not argmax(): the same first-maximum rule, several times faster on CPU for dim=1
    # int32 indices: half the memory traffic of int64 in the index arithmetic below
    pred = seg_logits.detach().max(dim=1).indices.flatten(1).int()
    target = seg_target.flatten(1).int()
    # the ignore index is outside [0, C) (250 for Cityscapes, -1 for NYUv2), so this drops it too
    keep = (target >= 0) & (target < c)
    if 0 <= ignore_index < c:
        raise ValueError(f"ignore_index {ignore_index} is a class index (num_classes {c})")
    image = torch.arange(n, device=pred.device, dtype=torch.int32).unsqueeze(1) * (c * c)
    index = torch.where(keep, image + target * c + pred, n * c * c).flatten()
    # index_add_ rather than bincount: CUDA's bincount reads the maximum back to the host (a sync)
    counts = torch.zeros(n * c * c + 1, dtype=torch.int64, device=pred.device)
    counts.index_add_(0, index, torch.ones_like(index, dtype=torch.int64))
    return counts[:-1].view(n, c, c)


class PaperMetrics:
    """mIoU, PixAcc, Abs, AbsRel exactly as the original computes them (fractions, not percent).

    Per image, class j: intersection = confusion[j, j]; union = pixels predicted or labelled j among the
    non-ignored pixels; classes with an empty union are skipped.
    """

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._sums: torch.Tensor | None = None  # [miou, pix_acc, abs*n, rel*n, images]
        self._tasks: set[str] = set()

    def update(self, seg_logits: torch.Tensor | None, depth_pred: torch.Tensor | None, seg_target: torch.Tensor,
               depth_target: torch.Tensor) -> None:
        """A single-task network passes None for the task it lacks; that task's scores are then absent."""
        n = seg_target.shape[0]
        zero = torch.zeros((), dtype=torch.float64, device=seg_target.device)
        miou_sum = pix_sum = abs_n = rel_n = zero
        if seg_logits is not None:
            self._tasks.add("seg")
            conf = per_image_confusion(seg_logits, seg_target, self.num_classes, self.ignore_index).double()
            inter = conf.diagonal(dim1=1, dim2=2)
            union = conf.sum(1) + conf.sum(2) - inter
            present = union > 0
            miou_sum = ((inter / union.clamp_min(1)).sum(1) / present.sum(1).clamp_min(1)).sum()
            pix_sum = (inter.sum(1) / conf.sum((1, 2)).clamp_min(1)).sum()
        if depth_pred is not None:
            self._tasks.add("depth")
            dp, dt, valid = _depth_inputs(depth_pred, depth_target)
            err = (dp - dt).abs()
            count = valid.sum().clamp_min(1).double()
            abs_n = (err * valid).sum().double() / count * n
            rel_n = (err / dt.where(valid, torch.ones_like(dt)) * valid).sum().double() / count * n
        batch = torch.stack([miou_sum, pix_sum, abs_n, rel_n, zero + n])
        self._sums = batch if self._sums is None else self._sums + batch

    def all_reduce(self, reduce_sum, device: torch.device) -> None:
        """Sum the accumulated state over data-parallel ranks (``reduce_sum`` sums a tensor in place);
        a rank that scored no batch contributes zeros."""
        if self._sums is None:
            self._sums = torch.zeros(5, dtype=torch.float64, device=device)
        reduce_sum(self._sums)

    def compute(self) -> dict[str, float]:
        if self._sums is None:
            raise ValueError("PaperMetrics.compute() before any update()")
        miou, pix, abs_n, rel_n, n = self._sums.tolist()
        out = {}
        if "seg" in self._tasks:
            out.update(miou=miou / n, pix_acc=pix / n)
        if "depth" in self._tasks:
            out.update(abs_err=abs_n / n, rel_err=rel_n / n)
        return out


class StandardMetrics:
    """Dataset-level confusion matrix and pixel-weighted depth errors (fractions, not percent)."""

    def __init__(self, num_classes: int, ignore_index: int):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._confusion: torch.Tensor | None = None
        self._depth: torch.Tensor | None = None  # [sum abs, sum rel, sum sq, d1, d2, d3, count]

    def update(self, seg_logits: torch.Tensor | None, depth_pred: torch.Tensor | None, seg_target: torch.Tensor,
               depth_target: torch.Tensor) -> None:
        """None for a task the network lacks: its scores are then absent from ``compute``."""
        if seg_logits is not None:
            conf = per_image_confusion(seg_logits, seg_target, self.num_classes, self.ignore_index).sum(0)
            self._confusion = conf if self._confusion is None else self._confusion + conf
        if depth_pred is None:
            return
        dp, dt, valid = _depth_inputs(depth_pred, depth_target)
        # masks, not boolean indexing, so that nothing waits for the device
        dp, dt, v = dp.double(), dt.where(valid, torch.ones_like(dt)).double(), valid.double()
        err = (dp - dt).abs() * v
        ratio = torch.maximum(dp / dt, dt / dp.clamp_min(1e-9))
        ratio = torch.where(dp > 0, ratio, torch.full_like(ratio, float("inf")))
        sums = torch.stack([err.sum(), (err / dt).sum(), err.square().sum(),
                            ((ratio < 1.25) * v).sum(), ((ratio < 1.25 ** 2) * v).sum(),
                            ((ratio < 1.25 ** 3) * v).sum(), v.sum()])
        self._depth = sums if self._depth is None else self._depth + sums

    def compute(self) -> dict[str, float]:
        if self._confusion is None and self._depth is None:
            raise ValueError("StandardMetrics.compute() before any update()")
        out: dict = {}
        if self._confusion is not None:
            conf = self._confusion.double()
            inter = conf.diag()
            union = conf.sum(0) + conf.sum(1) - inter
            present = union > 0
            out["miou"] = (inter[present] / union[present]).mean().item() if present.any() else 0.0
            out["pix_acc"] = (inter.sum() / conf.sum().clamp_min(1)).item()
        if self._depth is not None:
            s_abs, s_rel, s_sq, d1, d2, d3, n = self._depth.tolist()
            n = max(n, 1.0)
            out.update(abs_err=s_abs / n, rel_err=s_rel / n, rmse=(s_sq / n) ** 0.5,
                       delta1=d1 / n, delta2=d2 / n, delta3=d3 / n)
        if self._confusion is not None:
            out["iou_per_class"] = (inter / union.clamp_min(1)).tolist()
        return out


class ShuffledBatchDepth:
    """How much the paper's batch-pooled Abs and AbsRel depend on which images share a batch.

    The original shuffles its validation loader, so each evaluation pools the depth errors over a random
    grouping of the images into batches (``PaperMetrics``: per batch, the error sum over the valid pixels
    divided by their count, weighted by the batch's images). This keeps the per-image sums (error,
    relative error, valid pixels) and scores many random groupings of them: cheap, with no second pass.
    """

    def __init__(self) -> None:
        self._sums: list[torch.Tensor] = []  # per batch, (n, 3): [abs sum, rel sum, valid pixels]

    def update(self, depth_pred: torch.Tensor, depth_target: torch.Tensor) -> None:
        dp, dt, valid = _depth_inputs(depth_pred, depth_target)
        err = ((dp - dt).abs() * valid).double()
        rel = err / dt.where(valid, torch.ones_like(dt)).double()
        self._sums.append(torch.stack([err.flatten(1).sum(1), rel.flatten(1).sum(1),
                                       valid.flatten(1).sum(1).double()], dim=1))

    def per_image(self) -> np.ndarray:
        return np.concatenate([s.cpu().numpy() for s in self._sums]) if self._sums else np.zeros((0, 3))

    def spread(self, batch_size: int, draws: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
        """Abs and AbsRel in the stored order and over ``draws`` random orders (numpy's PCG64, ``seed``):
        mean, sample std, min and max."""
        sums = self.per_image()
        n = len(sums)
        if n == 0:
            raise ValueError("ShuffledBatchDepth.spread() before any update()")
        starts = np.arange(0, n, batch_size)
        sizes = np.diff(np.append(starts, n)).astype(np.float64)

        def pooled(order: np.ndarray) -> np.ndarray:
            per_batch = np.add.reduceat(sums[order], starts, axis=0)  # (batches, 3)
            count = np.maximum(per_batch[:, 2], 1.0)
            return (per_batch[:, :2] / count[:, None] * sizes[:, None]).sum(0) / n

        rng = np.random.default_rng(seed)
        values = np.stack([pooled(rng.permutation(n)) for _ in range(draws)])
        stored = pooled(np.arange(n))
        return {name: {"stored_order": float(stored[i]), "mean": float(values[:, i].mean()),
                       "std": float(values[:, i].std(ddof=1)), "min": float(values[:, i].min()),
                       "max": float(values[:, i].max()), "draws": draws}
                for i, name in enumerate(("abs_err", "rel_err"))}
