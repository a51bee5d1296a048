"""Evaluation of a trained checkpoint on the validation split: paper and standard metrics."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from . import checkpoint
from .batches import batch_options, iterate, make_loader
from .config import DatasetConfig
from .data.labels import class_names
from .data.prepare import PreparedSplit
from .engine import build_model
from .hardware import resolve
from .errors import XTaskError
from .methods import METHODS, Method
from .metrics import PaperMetrics, StandardMetrics

# The settings that change the network's shape: a checkpoint must agree on all of them.
ARCHITECTURE = ("enc_layers", "num_classes", "batch_norm", "wider_ttnet", "decoder_width", "ttnet_width")
PERCENT = ("miou", "pix_acc")


def _percent(scores: dict[str, float]) -> dict[str, float]:
    """mIoU and PixAcc in percent, as the tables print them; depth errors as they are."""
    return {k: (100 * v if k in PERCENT else v) for k, v in scores.items() if k != "iou_per_class"}


def evaluate(cfg: DatasetConfig, ckpt_path: Path, *, device_override: Optional[str] = None,
             amp_override: Optional[str] = None, progress: bool = True, root: Path = Path("."),
             method: Method = METHODS["xtask"]) -> dict[str, Any]:
    """Scores the prepared validation split (whatever ``data_source`` training read); a single-task
    method gets its own task's scores only."""
    hw = resolve(cfg, device_override, amp_override=amp_override)
    device = hw.device
    state = checkpoint.load(ckpt_path, map_location=device)
    saved = state.get("config", {})
    for key in ARCHITECTURE:
        if saved.get(key) != getattr(cfg, key):
            raise XTaskError(f"{ckpt_path}: trained with {key} = {saved.get(key)!r}, but params say "
                             f"{cfg.name}.{key} = {getattr(cfg, key)!r}; retrain (dvc repro)")
    if state.get("method", "xtask") != method.name:
        raise XTaskError(f"{ckpt_path}: a {state.get('method', 'xtask')} checkpoint, but {method.name} was asked "
                         "to be evaluated")
    model = build_model(cfg, method, pretrained=False)
    model.load_state_dict(state["model"])
    run_model = hw.model(model).eval()
    prepared = cfg.prepared_dir(root)
    val = PreparedSplit(prepared, "val")
    meta = val.meta
    loader = make_loader(val, cfg.batch_size, shuffle=False, workers=cfg.workers)
    families = (PaperMetrics, StandardMetrics)
    paper, standard = (f(cfg.num_classes, cfg.ignore_index) for f in families)
    base_paper, base_std = (f(cfg.num_classes, cfg.ignore_index) for f in families)
    mean_depth = float(meta["train_depth_mean"])
    kwargs = batch_options(cfg, meta["depth_kind"])
    with torch.no_grad():
        for batch in tqdm(iterate(loader, device, **kwargs), total=len(loader), desc=f"evaluate {cfg.name}",
                          disable=None if progress else True, file=sys.stderr):
            # direct predictions only: the tables score the decoders, not the TTNets
            with hw.autocast():
                out = run_model(hw.input(batch.image), with_transfer=False)
            paper.update(out.seg, out.depth, batch.seg, batch.depth)
            standard.update(out.seg, out.depth, batch.seg, batch.depth)
            if out.depth is not None:
                constant = torch.full_like(batch.depth, mean_depth)
                base_paper.update(None, constant, batch.seg, batch.depth)
                base_std.update(None, constant, batch.seg, batch.depth)
    std = standard.compute()
    result = {
        "dataset": cfg.name, "method": method.name, "seed": int(state.get("seed", -1)),
        "best_epoch": int(state["epoch"]), "val_images": len(val), "depth_unit": meta["depth_kind"],
        "amp": hw.amp,
        "paper": _percent(paper.compute()),
        "standard": _percent(std),
    }
    if "seg" in method.tasks:
        result["standard_iou_per_class"] = dict(zip(class_names(cfg.format, cfg.num_classes),
                                                    (100 * v for v in std["iou_per_class"])))
    if "depth" in method.tasks:
        bp, bs = base_paper.compute(), base_std.compute()
        result["baseline_mean_depth"] = {"train_depth_mean": mean_depth, "paper_abs_err": bp["abs_err"],
                                         "paper_rel_err": bp["rel_err"], "standard_abs_err": bs["abs_err"],
                                         "standard_rmse": bs["rmse"]}
    return result
