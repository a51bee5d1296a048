"""The training loop: Adam, StepLR per epoch, validation every epoch, best (by val loss) and last kept."""
from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from . import checkpoint
from .balancing import make_balancer
from .batches import Batch, iterate, make_loader, open_split
from .config import DatasetConfig
from .engine import build_model, combine, compute_terms, seed_everything
from .errors import XTaskError
from .hardware import Hardware, resolve
from .metrics import PaperMetrics

TERMS = ("seg", "depth", "seg_transferred", "depth_transferred")


def _batch_kwargs(cfg: DatasetConfig, depth_kind: str) -> dict[str, Any]:
    return {"ignore_index": cfg.ignore_index, "depth_kind": depth_kind, "with_seg_mask": cfg.format == "cityscapes"}


def forward_losses(model, balancer, cfg: DatasetConfig, hw: Hardware, batch: Batch):
    """(outputs, loss terms, balanced total) of one batch."""
    with hw.autocast():
        out = model(hw.input(batch.image))
    terms = compute_terms(cfg, out, batch)  # in fp32 whatever the autocast dtype
    return out, terms, balancer.combine(*combine(cfg, terms))


def train_step(model, balancer, cfg: DatasetConfig, hw: Hardware, batch: Batch, optimizer, scaler=None):
    """One optimisation step; returns the loss terms and the balanced total (on the device)."""
    with hw.autocast():
        out = model(hw.input(batch.image))
    terms = compute_terms(cfg, out, batch)
    optimizer.zero_grad(set_to_none=True)
    total = balancer.backward(*combine(cfg, terms), scaler)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    balancer.after_step()
    return terms, total


def run_epoch(model, balancer, cfg, loader, hw: Hardware, batch_kwargs, *, optimizer=None, scaler=None,
              generator=None, metrics: Optional[PaperMetrics] = None, desc: str = "", progress: bool = True
              ) -> dict[str, float]:
    """One pass over ``loader``; trains when an optimizer is given.

    Nothing in the loop waits for the device: the loss sums stay there until the epoch ends.
    """
    training = optimizer is not None
    device = hw.device
    model.train(training)
    sums = torch.zeros(len(TERMS) + 2, dtype=torch.float64, device=device)  # terms, total, images
    with torch.set_grad_enabled(training):
        for batch in tqdm(iterate(loader, device, augment_generator=generator, **batch_kwargs), total=len(loader),
                          desc=desc, leave=False, disable=None if progress else True, file=sys.stderr):
            if training:
                terms, total = train_step(model, balancer, cfg, hw, batch, optimizer, scaler)
            else:
                out, terms, total = forward_losses(model, balancer, cfg, hw, batch)
                if metrics is not None:
                    metrics.update(out.seg, out.depth, batch.seg, batch.depth)
            n = batch.image.shape[0]
            sums += torch.stack([*(terms[t].detach().double() * n for t in TERMS), total.detach().double() * n,
                                 torch.full((), float(n), dtype=torch.float64, device=device)])
    values = sums.tolist()  # the one host synchronisation per epoch
    n = values[-1]
    out = {f"loss_{t}": values[i] / n for i, t in enumerate(TERMS)}
    out["loss"] = values[len(TERMS)] / n
    return out


def train(cfg: DatasetConfig, seed: int, out_dir: Path, *, device_override: Optional[str] = None,
          amp_override: Optional[str] = None, live=None, progress: bool = True, root: Path = Path(".")
          ) -> dict[str, Any]:
    """Train one seed; writes ``best.pt`` and ``last.pt`` in ``out_dir``; returns a summary."""
    hw = resolve(cfg, device_override, amp_override=amp_override)
    seed_everything(seed)
    train_split, val_split = open_split(cfg, "train", root), open_split(cfg, "val", root)
    depth_kind = train_split.meta["depth_kind"]
    if train_split.meta["num_classes"] != cfg.num_classes:
        raise XTaskError(f"{cfg.prepared_dir(root)}/meta.json: prepared for {train_split.meta['num_classes']} "
                         f"classes but params say {cfg.name}.num_classes = {cfg.num_classes}; rerun the prepare stage")
    model = build_model(cfg)
    run_model = hw.model(model)
    balancer = make_balancer(cfg.balancing, model.encoder.last_conv().weight, cfg.gradnorm_alpha).to(hw.device)
    optimizer = hw.optimizer([*model.parameters(), *balancer.parameters()], cfg.lr, cfg.betas)
    scaler = hw.grad_scaler()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.scheduler_step_size, cfg.scheduler_gamma)
    train_loader = make_loader(train_split, cfg.batch_size, shuffle=True, seed=seed, workers=cfg.workers)
    val_loader = make_loader(val_split, cfg.batch_size, shuffle=False, seed=seed, workers=cfg.workers)
    augment = torch.Generator().manual_seed(seed + 1)
    kwargs = _batch_kwargs(cfg, depth_kind)
    config = dataclasses.asdict(cfg)
    best = {"epoch": 0, "val_loss": math.inf}
    epochs = tqdm(range(1, cfg.epochs + 1), desc=f"{cfg.name} seed {seed}", disable=None if progress else True,
                  file=sys.stderr)
    for epoch in epochs:
        tr = run_epoch(run_model, balancer, cfg, train_loader, hw, kwargs, optimizer=optimizer, scaler=scaler,
                       generator=augment, desc="train", progress=progress)
        metrics = PaperMetrics(cfg.num_classes, cfg.ignore_index)
        va = run_epoch(run_model, balancer, cfg, val_loader, hw, kwargs, metrics=metrics, desc="val",
                       progress=progress)
        if not math.isfinite(tr["loss"]):
            bad = [t for t in TERMS if not math.isfinite(tr[f"loss_{t}"])] or ["total"]
            raise XTaskError(f"training diverged: non-finite loss ({', '.join(bad)}) in epoch {epoch}; "
                             f"the last good checkpoint is kept in {out_dir}")
        scores = metrics.compute()
        state = {"model": model.state_dict(), "balancer": balancer.state_dict(), "config": config,
                 "seed": seed, "epoch": epoch, "val_loss": va["loss"], "depth_kind": depth_kind, "amp": hw.amp}
        if va["loss"] < best["val_loss"]:
            best = {"epoch": epoch, "val_loss": va["loss"]}
            checkpoint.save(out_dir / "best.pt", state)
        checkpoint.save(out_dir / "last.pt", state)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        epochs.set_postfix(train=f"{tr['loss']:.4f}", val=f"{va['loss']:.4f}", miou=f"{scores['miou']:.3f}")
        if live is not None:
            for k, v in tr.items():
                live.log_metric(f"train/{k}", v)
            for k, v in va.items():
                live.log_metric(f"val/{k}", v)
            for k, v in scores.items():
                live.log_metric(f"val/paper_{k}", v)
            for k, v in balancer.weights().items():
                live.log_metric(f"balancing/{k}", v)
            live.log_metric("lr", lr)
            live.next_step()
    return {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "device": str(hw.device),
            "amp": hw.amp, "last_val": {**va, **{f"paper_{k}": v for k, v in scores.items()}}}
