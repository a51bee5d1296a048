"""Evaluation of a trained checkpoint on the validation split: paper and standard metrics, and the
predictions on the first validation images that the qualitative figure shows (drawn by the figure
stage, xtask/reporting/figures.py, so that editing the drawing never reruns an evaluation).

The checkpoint may be this project's or the original xtask_mt's ``model.pth`` (see ``weights``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from xtask.common.config import DatasetConfig
from xtask.common.io import atomic_path
from xtask.common.labels import class_names
from xtask.common.methods import METHODS, Method
from xtask.common.metrics import PaperMetrics, ShuffledBatchDepth, StandardMetrics
from xtask.common.prepared import PreparedSplit
from xtask.core.batches import BatchSpec, batch_spec, iterate, make_loader, to_batch
from xtask.core.hardware import resolve
from xtask.core.predictor import Predictor
from xtask.core.protocol import protocol_of
from xtask.evaluation.identity import identity

PERCENT = ("miou", "pix_acc")
FIGURE_IMAGES = 4
SHUFFLE_DRAWS = 1000  # random batchings of the validation images scored for the shuffled-loader spread


def _percent(scores: dict[str, float]) -> dict[str, float]:
    """mIoU and PixAcc in percent, as the tables print them; depth errors as they are."""
    return {k: (100 * v if k in PERCENT else v) for k, v in scores.items() if k != "iou_per_class"}


def _numpy(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.detach().float().cpu().numpy()


def _labels(logits: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if logits is None else logits.argmax(1).cpu().numpy()


def _depth(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else _numpy(t[:, 0])


def examples(predictor: Predictor, split: PreparedSplit, k: int, spec: BatchSpec) -> dict[str, Optional[np.ndarray]]:
    """The first ``k`` images of ``split``, their targets and every prediction (TTNets included), by the
    names of ``xtask.reporting.figures.Examples``; None where the model does not predict a map."""
    raw = split.read(list(range(min(k, len(split)))))
    batch = to_batch((*(torch.from_numpy(a) for a in raw), (0, len(raw[0]))), predictor.hw.device, spec)
    out = predictor(batch.image, with_transfer=True)
    image = raw[0] if raw[0].dtype == np.uint8 else np.round(np.clip(raw[0], 0, 1) * 255).astype(np.uint8)
    return dict(image=image, seg_target=batch.seg.cpu().numpy(), seg=_labels(out.seg),
                seg_transferred=_labels(out.seg_transferred), depth_target=_depth(batch.depth),
                depth=_depth(out.depth), depth_transferred=_depth(out.depth_transferred))


def write_examples(path: str | Path, maps: dict[str, Optional[np.ndarray]], *, depth_kind: str, title: str) -> None:
    """Save the examples as data (tensors and strings: loadable with ``weights_only=True``), atomically."""
    payload: dict[str, Any] = {name: torch.from_numpy(np.ascontiguousarray(m)) for name, m in maps.items()
                               if m is not None}
    payload.update(depth_kind=depth_kind, title=title)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def evaluate(cfg: DatasetConfig, ckpt_path: Path, data_dir: Path, *, device_override: Optional[str] = None,
             progress: bool = True, examples_path: Optional[Path] = None, method: Method = METHODS["xtask"]
             ) -> dict[str, Any]:
    """Scores the validation split of the prepared data in ``data_dir``; with ``examples_path``, also
    saves the predictions on its first ``FIGURE_IMAGES`` images there (``write_examples``).
    A single-task method gets its own task's scores only.

    ``seed`` and ``best_epoch`` are -1 for an original checkpoint, which does not record them.
    """
    hw = resolve(cfg.runtime, cfg.protocol, device_override)
    predictor = Predictor.from_checkpoint(cfg, ckpt_path, hw, method)
    weights, data, protocol = predictor.weights, cfg.data, protocol_of(cfg.protocol)
    val = PreparedSplit(data_dir, "val")
    meta = val.meta
    loader = make_loader(val, cfg.optim.batch_size, shuffle=False, workers=cfg.runtime.workers)
    families = (PaperMetrics, StandardMetrics)
    paper, standard = (f(data.num_classes, data.ignore_index) for f in families)
    base_paper, base_std = (f(data.num_classes, data.ignore_index) for f in families)
    shuffled = ShuffledBatchDepth()
    mean_depth = float(meta["train_depth_mean"])
    spec = batch_spec(data, protocol)
    with torch.no_grad():
        for batch in tqdm(iterate(loader, hw.device, spec), total=len(loader), desc=f"evaluate {cfg.name}",
                          disable=None if progress else True, file=sys.stderr):
            out = predictor(batch.image)  # direct predictions only: the tables score the decoders, not the TTNets
            paper.update(out.seg, out.depth, batch.seg, batch.depth)
            standard.update(out.seg, out.depth, batch.seg, batch.depth)
            if out.depth is not None:
                shuffled.update(out.depth, batch.depth)
                constant = torch.full_like(batch.depth, mean_depth)
                base_paper.update(None, constant, batch.seg, batch.depth)
                base_std.update(None, constant, batch.seg, batch.depth)
    if examples_path is not None:
        write_examples(examples_path, examples(predictor, val, FIGURE_IMAGES, spec),
                       depth_kind=meta["depth_kind"],
                       title=f"{cfg.name} {method.name}: {Path(ckpt_path).name} "
                             f"({'the original xtask_mt' if weights.source == 'original' else 'this project'}'s "
                             "checkpoint)")
    std = standard.compute()
    result = {
        "dataset": cfg.name, "method": method.name, "seed": -1 if weights.seed is None else weights.seed,
        "best_epoch": -1 if weights.epoch is None else weights.epoch, "val_images": len(val),
        "depth_unit": meta["depth_kind"], "amp": hw.amp, "protocol": protocol.name,
        **identity(weights, cfg),  # config_id, config: which seeds the report may average
        "paper": _percent(paper.compute()),
        "standard": _percent(std),
    }
    if "seg" in method.tasks:
        result["standard_iou_per_class"] = dict(zip(class_names(data.format, data.num_classes),
                                                    (100 * v for v in std["iou_per_class"])))
    if "depth" in method.tasks:
        # the original's shuffled validation loader: its batch-pooled depth errors over random batchings
        result["paper_depth_shuffled_batches"] = shuffled.spread(cfg.optim.batch_size, SHUFFLE_DRAWS)
        bp, bs = base_paper.compute(), base_std.compute()
        result["baseline_mean_depth"] = {"train_depth_mean": mean_depth, "paper_abs_err": bp["abs_err"],
                                         "paper_rel_err": bp["rel_err"], "standard_abs_err": bs["abs_err"],
                                         "standard_rmse": bs["rmse"]}
    return result
