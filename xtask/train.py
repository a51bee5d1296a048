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
from .batches import Batch, batch_options, iterate, make_loader, open_split
from .config import DatasetConfig
from .distributed import World, check_batch, setup, wrap
from .engine import build_model, combine, compute_terms, seed_everything
from .methods import METHODS, Method
from .errors import XTaskError
from .hardware import Hardware, resolve
from .metrics import PaperMetrics
from .resume import Interrupted, StopRequest, check_resumable, config_hash, hashed_config, restore_rng, rng_state

XTASK = METHODS["xtask"]


def _seg_denominator(cfg: DatasetConfig, batch: Batch, world: World) -> Optional[torch.Tensor]:
    """For a rank's slice: the labelled pixels of the whole global batch, times the slice's share of
    its images (undone by the loss scale in ``train_step``), so the ranks' seg terms average to the
    global batch's pixel mean. None alone (PyTorch's own mean)."""
    if not world.distributed or batch.total is None:
        return None
    labelled = world.all_reduce_sum((batch.seg != cfg.ignore_index).sum().double())  # on the device: no sync
    return (labelled * batch.image.shape[0] / batch.total).clamp_min(1)


def _forward(model, cfg: DatasetConfig, hw: Hardware, batch: Batch, world: World = World()):
    """(outputs, loss terms) of one batch; the terms in fp32 whatever the autocast dtype."""
    with hw.autocast():
        out = model(hw.input(batch.image))
    return out, compute_terms(cfg, out, batch, _seg_denominator(cfg, batch, world))


def forward_losses(model, balancer, cfg: DatasetConfig, hw: Hardware, batch: Batch, method: Method = XTASK):
    """(outputs, loss terms, balanced total) of one batch."""
    out, terms = _forward(model, cfg, hw, batch)
    return out, terms, balancer.combine(*combine(cfg, terms, method))


def _share(batch: Batch, world: World) -> float:
    """This rank's loss scale: its images over an even share of the global batch. DDP averages the
    ranks' gradients, so image-mean losses scaled so add up to exactly the global batch's gradient."""
    if not world.distributed or batch.total is None:
        return 1.0
    return batch.image.shape[0] * world.size / batch.total


def train_step(model, balancer, cfg: DatasetConfig, hw: Hardware, batch: Batch, optimizer, scaler=None,
               world: World = World(), method: Method = XTASK):
    """One optimisation step; returns the loss terms and the balanced total (on the device)."""
    _, terms = _forward(model, cfg, hw, batch, world)
    optimizer.zero_grad(set_to_none=True)
    label, image = combine(cfg, terms, method)
    share = _share(batch, world)
    if share != 1.0:
        label, image = label * share, image * share
    total = balancer.backward(label, image, scaler)
    balancer.sync_grads(world)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    balancer.after_step()
    return terms, total


def run_epoch(model, balancer, cfg, loader, hw: Hardware, batch_kwargs, *, optimizer=None, scaler=None,
              generator=None, metrics: Optional[PaperMetrics] = None, desc: str = "", progress: bool = True,
              sums: Optional[torch.Tensor] = None, on_step=None, world: World = World(),
              method: Method = XTASK) -> torch.Tensor:
    """One pass over ``loader``; trains when an optimizer is given. Returns the loss sums.

    Nothing in the loop waits for the device: the sums ([terms..., total, images, first non-finite
    step]) stay there. ``on_step(step, sums)`` runs after every training step (the stop check).
    """
    training = optimizer is not None
    device = hw.device
    model.train(training)
    if sums is None:
        sums = torch.zeros(len(method.terms) + 3, dtype=torch.float64, device=device)
        sums[-1] = -1
    step = loader.sampler.skip
    with torch.set_grad_enabled(training):
        bar = tqdm(iterate(loader, device, augment_generator=generator, **batch_kwargs), total=len(loader) - step,
                   desc=desc, leave=False, disable=None if progress else True, file=sys.stderr)
        for batch in bar:
            if training:
                terms, total = train_step(model, balancer, cfg, hw, batch, optimizer, scaler, world, method)
            else:
                out, terms, total = forward_losses(model, balancer, cfg, hw, batch, method)
                if metrics is not None:
                    metrics.update(out.seg, out.depth, batch.seg, batch.depth)
            n = batch.image.shape[0]
            values = torch.stack([*(terms[t].detach().double() for t in method.terms), total.detach().double()])
            # remember the first step whose losses were not finite, still without a sync
            first_bad = torch.where((sums[-1] < 0) & ~torch.isfinite(values).all(),
                                    torch.full((), float(step), dtype=torch.float64, device=device), sums[-1])
            sums = torch.cat([sums[:-2] + values * n, sums[-2:-1] + n, first_bad.view(1)])
            step += 1
            if on_step is not None:
                on_step(step, sums)
    return sums


def reduce_sums(sums: torch.Tensor, world: World) -> torch.Tensor:
    """The epoch's sums over all ranks: losses and counts add up, the first non-finite step is the
    latest any rank saw (-1 only if none did)."""
    if world.distributed:
        world.all_reduce_sum(sums[:-1])
        world.all_reduce_max(sums[-1:])
    return sums


def summarise(sums: torch.Tensor, method: Method = XTASK) -> dict[str, float]:
    """Mean losses per image from the sums; the one host synchronisation of an epoch."""
    values = sums.tolist()
    n = values[-2]
    out = {f"loss_{t}": values[i] / n for i, t in enumerate(method.terms)}
    out["loss"] = values[len(method.terms)] / n
    out["first_nonfinite_step"] = values[-1]
    return out


def _log_epoch(live, entry: dict[str, float]) -> None:
    for key, value in entry.items():
        live.log_metric(key, value)
    live.next_step()


def resume_state(cfg: DatasetConfig, seed: int, out_dir: Path, *, restart: bool = False, method: Method = XTASK,
                 config: Optional[dict[str, Any]] = None) -> Optional[dict]:
    """The saved state a run in ``out_dir`` resumes from, or None; raises if it must be refused.
    ``config``: the run's ``hashed_config``, when the caller has it already (it hashes the sources)."""
    last_path = Path(out_dir) / "last.pt"
    if restart or not last_path.exists():
        return None
    return check_resumable(checkpoint.load(last_path), last_path,
                           config if config is not None else hashed_config(cfg, seed, method.name))


def _weights(state: dict[str, Any]) -> dict[str, Any]:
    """What evaluation needs of a state: best.pt stays small (no optimiser, generators or log)."""
    keep = ("model", "balancer", "config", "method", "seed", "epoch", "depth_kind", "amp", "config_hash")
    return {k: state[k] for k in keep}


def train(cfg: DatasetConfig, seed: int, out_dir: Path, *, device_override: Optional[str] = None,
          amp_override: Optional[str] = None, live=None, progress: bool = True, root: Path = Path("."),
          restart: bool = False, world: World = World(), method: Method = XTASK) -> dict[str, Any]:
    """Train one seed; ``best.pt`` and ``last.pt`` in ``out_dir``; resumes from ``last.pt`` when it
    holds an unfinished run with the same params. Returns a summary.

    Under torchrun (``world`` of several ranks) every rank calls this; rank 0 alone writes files and
    logs, and a stopped run resumes from the last finished epoch (see ``xtask.distributed``)."""
    hw = resolve(cfg, device_override, amp_override=amp_override)
    check_batch(cfg.batch_size, world, f"{cfg.name}.batch_size")
    hw = dataclasses.replace(hw, device=setup(world, hw.device))
    progress = progress and world.is_main
    seed_everything(seed)
    out_dir = Path(out_dir)
    last_path = out_dir / "last.pt"
    config = hashed_config(cfg, seed, method.name)
    digest = config_hash(config)
    state = resume_state(cfg, seed, out_dir, restart=restart, method=method, config=config)
    if state is None and last_path.exists() and not restart and world.is_main:
        print(f"{last_path}: not resumed (a finished run with other params or code, or not a training state); "
              "training starts afresh", file=sys.stderr)
    train_split, val_split = open_split(cfg, "train", root), open_split(cfg, "val", root)
    depth_kind = train_split.meta["depth_kind"]
    if train_split.meta["num_classes"] != cfg.num_classes:
        raise XTaskError(f"{cfg.prepared_dir(root)}/meta.json: prepared for {train_split.meta['num_classes']} "
                         f"classes but params say {cfg.name}.num_classes = {cfg.num_classes}; rerun the prepare stage")
    model = build_model(cfg, method, pretrained=None if state is None else False)
    hw.place(model)
    run_model = hw.compiled(wrap(model, world, hw.device))
    # validation needs no gradient sync, and ranks score different numbers of batches: no DDP there
    val_model = hw.compiled(model) if world.distributed else run_model
    balancer = make_balancer(method.balancing(cfg.balancing), model.encoder.last_conv().weight, cfg.gradnorm_alpha,
                             world=world).to(hw.device)
    optimizer = hw.optimizer([*model.parameters(), *balancer.parameters()], cfg.lr, cfg.betas)
    scaler = hw.grad_scaler()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.scheduler_step_size, cfg.scheduler_gamma)
    order = torch.Generator().manual_seed(seed)
    augment = torch.Generator().manual_seed(seed + 1)
    train_loader = make_loader(train_split, cfg.batch_size, shuffle=True, generator=order, workers=cfg.workers,
                               world=world)
    val_loader = make_loader(val_split, cfg.batch_size, shuffle=False, workers=cfg.workers, world=world)
    kwargs = batch_options(cfg, depth_kind)
    best = {"epoch": 0, "val_loss": math.inf}
    history: list[dict[str, float]] = []
    start_epoch, sums, epoch_order = 1, None, None
    if state is not None:
        model.load_state_dict(state["model"])
        balancer.load_state_dict(state["balancer"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], augment, order)
        best, history = state["best"], state["history"]
        if state["finished"]:
            start_epoch = cfg.epochs + 1
        elif state["step"] > 0:  # stopped mid-epoch: replay the epoch's batch order, skip what was done
            start_epoch, epoch_order = state["epoch"], state["epoch_order"]
            # the saved sums are the whole epoch's so far: one rank carries them, or they would add up twice
            sums = state["sums"].to(hw.device) if world.is_main else None
            order.set_state(epoch_order)
            train_loader.sampler.skip = state["step"]
        else:
            start_epoch = state["epoch"] + 1
        if world.is_main:
            print(f"resuming {cfg.name} seed {seed} from {last_path} at epoch {start_epoch}"
                  + (f" step {state['step']}" if state["step"] else ""), file=sys.stderr)
    if live is not None:
        for entry in history:  # the log is rebuilt from the state, so it never holds a lost epoch twice
            _log_epoch(live, entry)

    def snapshot(epoch: int, step: int, finished: bool, sums=None, epoch_order=None) -> dict[str, Any]:
        return {"model": model.state_dict(), "balancer": balancer.state_dict(), "config": dataclasses.asdict(cfg), "method": method.name,
                "hashed_config": config, "config_hash": digest, "seed": seed, "epoch": epoch,
                "step": step, "finished": finished, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
                "rng": rng_state(augment, order), "best": best, "history": history, "depth_kind": depth_kind,
                "amp": hw.amp, "sums": sums.cpu() if sums is not None else None, "epoch_order": epoch_order,
                "world_size": world.size}

    epochs = tqdm(range(start_epoch, cfg.epochs + 1), desc=f"{cfg.name} {method.name} seed {seed}",
                  disable=None if progress else True, file=sys.stderr)
    with StopRequest() as stop:
        for epoch in epochs:
            if epoch_order is None:
                epoch_order = order.get_state()  # the state this epoch's permutation is drawn from

            def on_step(step, partial, epoch=epoch, epoch_order=epoch_order):
                if stop and world.distributed:
                    # ranks see the signal at different steps and hold only their own sums: resume
                    # from the last finished epoch, which last.pt already holds
                    raise Interrupted(f"stopped by signal {stop.signal} at epoch {epoch} step {step}; "
                                      f"{last_path} holds the last finished epoch: run the same command (or "
                                      "dvc repro) to resume from there")
                if stop:
                    checkpoint.save(last_path, snapshot(epoch, step, False, partial, epoch_order))
                    raise Interrupted(f"stopped by signal {stop.signal} at epoch {epoch} step {step}; the state is "
                                      f"saved in {last_path}: run the same command (or dvc repro) to resume")

            tr_sums = run_epoch(run_model, balancer, cfg, train_loader, hw, kwargs, optimizer=optimizer,
                                scaler=scaler, generator=augment, desc="train", progress=progress, sums=sums,
                                on_step=on_step, world=world, method=method)
            sums, epoch_order = None, None
            tr = summarise(reduce_sums(tr_sums, world), method)
            if tr["first_nonfinite_step"] >= 0:
                bad = [t for t in method.terms if not math.isfinite(tr[f"loss_{t}"])] or ["total"]
                raise XTaskError(f"training diverged: non-finite loss ({', '.join(bad)}) at epoch {epoch} step "
                                 f"{int(tr['first_nonfinite_step']) + 1}; the last good checkpoint is kept in "
                                 f"{last_path}")
            metrics = PaperMetrics(cfg.num_classes, cfg.ignore_index)
            va = summarise(reduce_sums(run_epoch(val_model, balancer, cfg, val_loader, hw, kwargs, metrics=metrics,
                                                 desc="val", progress=progress, world=world, method=method), world),
                           method)
            metrics.all_reduce(world.all_reduce_sum, hw.device)
            scores = metrics.compute()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            entry = {**{f"train/{k}": v for k, v in tr.items() if k != "first_nonfinite_step"},
                     **{f"val/{k}": v for k, v in va.items() if k != "first_nonfinite_step"},
                     **{f"val/paper_{k}": v for k, v in scores.items()},
                     **{f"balancing/{k}": v for k, v in balancer.weights().items()}, "lr": lr}
            history.append(entry)
            improved = va["loss"] < best["val_loss"]
            if improved:
                best = {"epoch": epoch, "val_loss": va["loss"]}
            if world.is_main:
                state = snapshot(epoch, 0, epoch == cfg.epochs)
                if improved:
                    checkpoint.save(out_dir / "best.pt", _weights(state))
                checkpoint.save(last_path, state)
            epochs.set_postfix(train=f"{tr['loss']:.4f}", val=f"{va['loss']:.4f}",
                               **{k: f"{scores[k]:.3f}" for k in ("miou", "abs_err") if k in scores})
            if live is not None:
                _log_epoch(live, entry)
    last = history[-1] if history else {}
    return {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "device": str(hw.device),
            "amp": hw.amp, "world_size": world.size, "last_val": {k[4:]: v for k, v in last.items() if k.startswith("val/")}}
