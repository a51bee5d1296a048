"""The training loop: Adam, StepLR per epoch, validation every epoch; the best model (by val loss) is kept.

A run's resumable state lives in a scratch folder (``xtask.training.resume``); the output folder gets
``best.pt`` once the run finished, and nothing else, so that it is an ordinary DVC output."""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch
from tqdm import tqdm

from xtask.core import checkpoint
from xtask.training.balancing import FixedWeights, make_balancer
from xtask.common.prepared import PreparedSplit
from xtask.core.batches import Batch, BatchSpec, batch_spec, iterate, make_loader
from xtask.common.config import DatasetConfig
from xtask.core.distributed import World, check_batch, setup, wrap
from xtask.core.model import build_model
from xtask.training.engine import combine, compute_terms, seed_everything
from xtask.common.methods import METHODS, Method
from xtask.common.errors import XTaskError
from xtask.core.hardware import Hardware, describe_device, resolve
from xtask.core.protocol import protocol_of
from xtask.common.metrics import PaperMetrics
from xtask.training.resume import (Scratch, StopRequest, describe_change, hashed_config, restore_rng, run_config,
                                   rng_state)

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


ADAM_DEFAULT_BETAS = (0.9, 0.999)  # main_stl.py's Adam: PyTorch's defaults


def make_optimisation(cfg: DatasetConfig, method: Method, model: torch.nn.Module, hw: Hardware,
                      world: World = World()) -> tuple[FixedWeights, torch.optim.Optimizer, Optional[Any]]:
    """(balancer, the model's Adam, fp16 loss scaler or None) for ``model``, as the protocol trains it."""
    protocol = protocol_of(cfg)
    balancer = make_balancer(method.balancing(cfg.balancing), model, gradnorm_alpha=cfg.gradnorm_alpha, lr=cfg.lr,
                             original=not protocol.clean_gradnorm, world=world).to(hw.device)
    betas = cfg.betas if method.multi_task or protocol.stl_dataset_betas else ADAM_DEFAULT_BETAS
    optimizer = hw.optimizer([*model.parameters(), *balancer.model_optimised()], cfg.lr, betas)
    return balancer, optimizer, hw.grad_scaler()


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


def run_epoch(model, balancer, cfg, loader, hw: Hardware, spec: BatchSpec, *, optimizer=None, scaler=None,
              generator=None, metrics: Optional[PaperMetrics] = None, desc: str = "", progress: bool = True,
              sums: Optional[torch.Tensor] = None, on_step=None, world: World = World(),
              method: Method = XTASK) -> torch.Tensor:
    """One pass over ``loader``; trains when an optimizer is given. Returns the loss sums.

    Nothing in the loop waits for the device: the sums ([terms..., total, images, first non-finite
    step]) stay there. ``on_step(step, sums)`` runs after every training step (the stop check).
    A batch's losses weigh by its images (``image_weighted_val_loss``), or, as the original sums its
    batches' mean losses, one per global batch; ``summarise`` divides by the images either way.
    """
    image_weighted = protocol_of(cfg).image_weighted_val_loss
    training = optimizer is not None
    device = hw.device
    model.train(training)
    if sums is None:
        sums = torch.zeros(len(method.terms) + 3, dtype=torch.float64, device=device)
        sums[-1] = -1
    step = loader.sampler.skip
    with torch.set_grad_enabled(training):
        bar = tqdm(iterate(loader, device, spec, augment_generator=generator), total=len(loader) - step,
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
            weight = n if image_weighted else n / (batch.total or n)  # a rank's slice: its share of the batch
            sums = torch.cat([sums[:-2] + values * weight, sums[-2:-1] + n, first_bad.view(1)])
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


def _duration(seconds: float) -> str:
    """45s, 12m, 3h05m: an ETA at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{round(seconds / 60)}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def epoch_line(run: str, epoch: int, epochs: int, train_loss: float, val_loss: float, scores: dict[str, float],
               seconds: float, eta_s: float) -> str:
    """``cityscapes xtask seed 0 epoch 3/250 train 0.4123 val 0.3981 miou 0.412 abs_err 0.0153 12.3s ETA 50m``:
    the one line an epoch prints whatever the terminal (progress bars are off where stderr is no TTY, as in
    `dvc queue logs`, CI and docker logs). mIoU as a fraction, as the dvclive log has it."""
    parts = [f"{run} epoch {epoch}/{epochs} train {train_loss:.4f} val {val_loss:.4f}"]
    parts += [f"{k} {scores[k]:.3f}" if k == "miou" else f"{k} {scores[k]:.4f}"
              for k in ("miou", "abs_err") if k in scores]
    return " ".join(parts + [f"{seconds:.1f}s", f"ETA {_duration(eta_s)}"])


def _log_epoch(live, entry: dict[str, float]) -> None:
    for key, value in entry.items():
        live.log_metric(key, value)
    live.next_step()


SAVE_EVERY_S = 300.0  # the default interval between two writes of the resumable state


def _cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A snapshot on the CPU (tensors copied; a module's extra state, plain values, deep-copied)."""
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in state_dict.items()}


def _note_others(scratch: Scratch) -> None:
    for path, old in scratch.others():
        print(f"{path}: an unfinished run of this dataset, method and seed with other params or code is kept "
              f"there ({describe_change(old, scratch.config)}); it resumes if they come back; delete "
              f"{path.parent} to reclaim the space", file=sys.stderr)


def train(cfg: DatasetConfig, seed: int, data_dir: Path, out_dir: Path, *, scratch_root: Path,
          save_every_s: float = SAVE_EVERY_S, device_override: Optional[str] = None,
          amp_override: Optional[str] = None, live=None, progress: bool = True, restart: bool = False,
          world: World = World(), method: Method = XTASK) -> dict[str, Any]:
    """Train one seed on the prepared data in ``data_dir``; write ``out_dir/best.pt`` when done.

    The resumable state is written to ``scratch_root`` (at most every ``save_every_s`` seconds, and
    at SIGTERM/SIGINT); a run of the same params, code, data, method and seed resumes it, and the
    folder is removed once the run finished. ``restart`` discards it. Returns a summary.

    Under torchrun (``world`` of several ranks) every rank calls this; rank 0 alone writes files and
    logs, and the state is written at epoch ends only (see ``xtask.core.distributed``)."""
    hw = resolve(cfg, device_override, amp_override=amp_override)
    check_batch(cfg.batch_size, world, f"{cfg.name}.batch_size")
    hw = dataclasses.replace(hw, device=setup(world, hw.device))
    progress = progress and world.is_main
    if world.is_main:  # before any data or model: where the hours will go, in every log
        print(describe_device(hw.device) + (f" x {world.size} processes" if world.distributed else ""),
              file=sys.stderr, flush=True)
    seed_everything(seed)
    out_dir, data_dir = Path(out_dir), Path(data_dir)
    train_split, val_split = PreparedSplit(data_dir, "train"), PreparedSplit(data_dir, "val")
    if train_split.meta["num_classes"] != cfg.num_classes:
        raise XTaskError(f"{data_dir}/meta.json: prepared for {train_split.meta['num_classes']} classes but params "
                         f"say {cfg.name}.num_classes = {cfg.num_classes}; rerun the prepare stage")
    depth_kind = train_split.meta["depth_kind"]
    scratch = Scratch(scratch_root, cfg.name, method.name, seed,
                      hashed_config(cfg, seed, method.name, train_split.meta))
    state = None if restart else scratch.load()
    if world.is_main:
        _note_others(scratch)
    model = build_model(cfg, method, pretrained=None if state is None else False)
    hw.place(model)
    run_model = hw.compiled(wrap(model, world, hw.device))
    # validation needs no gradient sync, and ranks score different numbers of batches: no DDP there
    val_model = hw.compiled(model) if world.distributed else run_model
    balancer, optimizer, scaler = make_optimisation(cfg, method, model, hw, world)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.scheduler_step_size, cfg.scheduler_gamma)
    order = torch.Generator().manual_seed(seed)
    augment = torch.Generator().manual_seed(seed + 1)
    train_loader = make_loader(train_split, cfg.batch_size, shuffle=True, generator=order, workers=cfg.workers,
                               world=world)
    val_loader = make_loader(val_split, cfg.batch_size, shuffle=False, workers=cfg.workers, world=world)
    spec = batch_spec(cfg)
    best: dict[str, Any] = {"epoch": 0, "val_loss": math.inf}
    best_model, best_balancer = _cpu_copy(model.state_dict()), _cpu_copy(balancer.state_dict())
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
        best_model, best_balancer = state["best_model"], state["best_balancer"]
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
            print(f"resuming {cfg.name} {method.name} seed {seed} from {scratch.state_path} at epoch {start_epoch}"
                  + (f" step {state['step']}" if state["step"] else ""), file=sys.stderr)
    if live is not None:
        for entry in history:  # the log is rebuilt from the state, so it never holds a lost epoch twice
            _log_epoch(live, entry)

    def snapshot(epoch: int, step: int, finished: bool, sums=None, epoch_order=None) -> dict[str, Any]:
        return {"model": model.state_dict(), "balancer": balancer.state_dict(), "config": dataclasses.asdict(cfg),
                "method": method.name, "hashed_config": scratch.config, "config_hash": scratch.digest, "seed": seed,
                "epoch": epoch, "step": step, "finished": finished, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else {},
                "rng": rng_state(augment, order), "best": best, "best_model": best_model,
                "best_balancer": best_balancer, "history": history, "depth_kind": depth_kind, "amp": hw.amp,
                "sums": sums.cpu() if sums is not None else None, "epoch_order": epoch_order,
                "world_size": world.size}

    last_save = time.monotonic()

    def save(payload: dict[str, Any]) -> None:
        nonlocal last_save
        scratch.save(payload)
        last_save = time.monotonic()

    def due() -> bool:
        return time.monotonic() - last_save >= save_every_s

    run_name = f"{cfg.name} {method.name} seed {seed}"
    epochs = tqdm(range(start_epoch, cfg.epochs + 1), desc=run_name, disable=None if progress else True,
                  file=sys.stderr)
    started = time.monotonic()
    with StopRequest() as stop:
        for epoch in epochs:
            epoch_start = time.monotonic()
            if epoch_order is None:
                epoch_order = order.get_state()  # the state this epoch's permutation is drawn from

            def on_step(step, partial, epoch=epoch, epoch_order=epoch_order):
                if world.distributed:
                    if stop:
                        # ranks see the signal at different steps and hold only their own sums: resume from
                        # the last epoch end that was saved
                        raise XTaskError(f"stopped by signal {stop.signal} at epoch {epoch} step {step}; "
                                         f"{scratch.state_path} holds the last saved epoch: run the same command "
                                         "(or dvc repro) to resume from there")
                    return
                if stop or due():
                    save(snapshot(epoch, step, False, partial, epoch_order))
                if stop:
                    raise XTaskError(f"stopped by signal {stop.signal} at epoch {epoch} step {step}; the state is "
                                     f"saved in {scratch.state_path}: run the same command (or dvc repro) to resume")

            balancer.start_epoch(epoch)
            tr_sums = run_epoch(run_model, balancer, cfg, train_loader, hw, spec, optimizer=optimizer,
                                scaler=scaler, generator=augment, desc="train", progress=progress, sums=sums,
                                on_step=on_step, world=world, method=method)
            sums, epoch_order = None, None
            tr = summarise(reduce_sums(tr_sums, world), method)
            if tr["first_nonfinite_step"] >= 0:
                bad = [t for t in method.terms if not math.isfinite(tr[f"loss_{t}"])] or ["total"]
                raise XTaskError(f"training diverged: non-finite loss ({', '.join(bad)}) at epoch {epoch} step "
                                 f"{int(tr['first_nonfinite_step']) + 1}; the last good state is kept in "
                                 f"{scratch.state_path}")
            metrics = PaperMetrics(cfg.num_classes, cfg.ignore_index)
            va = summarise(reduce_sums(run_epoch(val_model, balancer, cfg, val_loader, hw, spec, metrics=metrics,
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
            if va["loss"] < best["val_loss"]:
                best = {"epoch": epoch, "val_loss": va["loss"]}
                best_model, best_balancer = _cpu_copy(model.state_dict()), _cpu_copy(balancer.state_dict())
            finished = epoch == cfg.epochs
            if world.is_main and (finished or due()):
                save(snapshot(epoch, 0, finished))
            epochs.set_postfix(train=f"{tr['loss']:.4f}", val=f"{va['loss']:.4f}",
                               **{k: f"{scores[k]:.3f}" for k in ("miou", "abs_err") if k in scores})
            if world.is_main:
                now = time.monotonic()
                per_epoch = (now - started) / (epoch - start_epoch + 1)  # this process's epochs: resumes too
                tqdm.write(epoch_line(run_name, epoch, cfg.epochs, tr["loss"], va["loss"], scores, now - epoch_start,
                                      per_epoch * (cfg.epochs - epoch)), file=sys.stderr)
            if live is not None:
                _log_epoch(live, entry)
    if world.is_main:
        checkpoint.save(out_dir / "best.pt", {
            "model": best_model, "balancer": best_balancer, "config": dataclasses.asdict(cfg), "method": method.name,
            "seed": seed, "epoch": best["epoch"], "depth_kind": depth_kind, "amp": hw.amp,
            "config_hash": scratch.digest, "run_config": run_config(scratch.config)})
        scratch.remove()
    last = history[-1] if history else {}
    return {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "device": str(hw.device),
            "amp": hw.amp, "world_size": world.size, "last_val": {k[4:]: v for k, v in last.items() if k.startswith("val/")}}
