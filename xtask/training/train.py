"""The training loop: Adam, StepLR per epoch, validation every epoch; the best model (by val loss) is kept.

``train`` reads like torchvision's reference ``main``: build the run (``TrainingRun``), its data and its
record, loop over the epochs, save. A run's resumable state lives in a scratch folder
(``xtask.training.resume``); the output folder gets ``best.pt`` once the run finished, and nothing else,
so that it is an ordinary DVC output."""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from xtask.common.config import DatasetConfig
from xtask.common.errors import XTaskError
from xtask.common.methods import METHODS, Method
from xtask.common.metrics import PaperMetrics
from xtask.common.prepared import PreparedSplit
from xtask.core import checkpoint
from xtask.core.batches import make_loader
from xtask.core.distributed import World, check_batch, setup
from xtask.core.hardware import describe_device, resolve
from xtask.training.resume import (Scratch, StopRequest, describe_change, hashed_config, restore_rng, rng_state,
                                   run_config)
from xtask.training.run import TrainingRun

XTASK = METHODS["xtask"]
SAVE_EVERY_S = 300.0  # the default interval between two writes of the resumable state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def _note_others(scratch: Scratch) -> None:
    for path, old in scratch.others():
        print(f"{path}: an unfinished run of this dataset, method and seed with other params or code is kept "
              f"there ({describe_change(old, scratch.config)}); it resumes if they come back; delete "
              f"{path.parent} to reclaim the space", file=sys.stderr)


def _cpu_copy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A snapshot on the CPU (tensors copied; a module's extra state, plain values, deep-copied)."""
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else copy.deepcopy(v)
            for k, v in state_dict.items()}


class Loop:
    """The epochs of one run around its ``TrainingRun``: the data order and augmentation generators, the
    per-epoch history, the best model so far, and when and where the resumable state is written."""

    def __init__(self, run: TrainingRun, scratch: Scratch, seed: int, depth_kind: str, *, save_every_s: float):
        self.run, self.scratch, self.seed, self.depth_kind = run, scratch, seed, depth_kind
        self.save_every_s = save_every_s
        self.order = torch.Generator().manual_seed(seed)
        self.augment = torch.Generator().manual_seed(seed + 1)
        self.best: dict[str, Any] = {"epoch": 0, "val_loss": math.inf}
        self.best_model = _cpu_copy(run.model.state_dict())
        self.best_balancer = _cpu_copy(run.balancer.state_dict())
        self.history: list[dict[str, float]] = []
        self.start_epoch, self.sums, self.epoch_order, self.skip = 1, None, None, 0
        self.last_save = time.monotonic()
        self.stop: Optional[StopRequest] = None
        self.name = f"{run.cfg.name} {run.method.name} seed {seed}"

    # -- the resumable state -----------------------------------------------------------------------------

    def snapshot(self, epoch: int, step: int, finished: bool, sums=None, epoch_order=None) -> dict[str, Any]:
        run = self.run
        return {**run.state_dict(), "config": dataclasses.asdict(run.cfg), "method": run.method.name,
                "hashed_config": self.scratch.config, "config_hash": self.scratch.digest, "seed": self.seed,
                "epoch": epoch, "step": step, "finished": finished, "rng": rng_state(self.augment, self.order),
                "best": self.best, "best_model": self.best_model, "best_balancer": self.best_balancer,
                "history": self.history, "depth_kind": self.depth_kind, "amp": run.hw.amp,
                "sums": sums.cpu() if sums is not None else None, "epoch_order": epoch_order,
                "world_size": run.world.size}

    def resume(self, state: dict[str, Any]) -> None:
        """Continue from a saved state: after its last whole epoch, or mid-epoch at its step."""
        self.run.load_state_dict(state)
        restore_rng(state["rng"], self.augment, self.order)
        self.best, self.history = state["best"], state["history"]
        self.best_model, self.best_balancer = state["best_model"], state["best_balancer"]
        if state["finished"]:
            self.start_epoch = self.run.cfg.optim.epochs + 1
        elif state["step"] > 0:  # stopped mid-epoch: replay the epoch's batch order, skip what was done
            self.start_epoch, self.epoch_order = state["epoch"], state["epoch_order"]
            # the saved sums are the whole epoch's so far: one rank carries them, or they would add up twice
            self.sums = state["sums"].to(self.run.hw.device) if self.run.world.is_main else None
            self.order.set_state(self.epoch_order)
            self.skip = state["step"]
        else:
            self.start_epoch = state["epoch"] + 1
        if self.run.world.is_main:
            print(f"resuming {self.name} from {self.scratch.state_path} at epoch {self.start_epoch}"
                  + (f" step {state['step']}" if state["step"] else ""), file=sys.stderr)

    def save(self, payload: dict[str, Any]) -> None:
        self.scratch.save(payload)
        self.last_save = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last_save >= self.save_every_s

    def on_step(self, epoch: int, epoch_order, step: int, partial: torch.Tensor) -> None:
        """After every training step: save when due, stop at a signal."""
        if self.run.world.distributed:
            if self.stop:
                # ranks see the signal at different steps and hold only their own sums: resume from the
                # last epoch end that was saved
                raise XTaskError(f"stopped by signal {self.stop.signal} at epoch {epoch} step {step}; "
                                 f"{self.scratch.state_path} holds the last saved epoch: run the same command "
                                 "(or dvc repro) to resume from there")
            return
        if self.stop or self.due():
            self.save(self.snapshot(epoch, step, False, partial, epoch_order))
        if self.stop:
            raise XTaskError(f"stopped by signal {self.stop.signal} at epoch {epoch} step {step}; the state is "
                             f"saved in {self.scratch.state_path}: run the same command (or dvc repro) to resume")

    # -- the epochs --------------------------------------------------------------------------------------

    def epoch(self, epoch: int, train_loader, val_loader, progress: bool) -> dict[str, Any]:
        """Train and validate one epoch; returns its log entry and scores."""
        run, world = self.run, self.run.world
        if self.epoch_order is None:
            self.epoch_order = self.order.get_state()  # the state this epoch's permutation is drawn from
        epoch_order, train_loader.sampler.skip = self.epoch_order, self.skip
        run.balancer.start_epoch(epoch)
        tr_sums = run.train_epoch(train_loader, self.augment, sums=self.sums, progress=progress,
                                  on_step=lambda step, partial: self.on_step(epoch, epoch_order, step, partial))
        self.sums, self.epoch_order, self.skip = None, None, 0
        tr = run.summarise(tr_sums)
        if tr["first_nonfinite_step"] >= 0:
            bad = [t for t in run.method.terms if not math.isfinite(tr[f"loss_{t}"])] or ["total"]
            raise XTaskError(f"training diverged: non-finite loss ({', '.join(bad)}) at epoch {epoch} step "
                             f"{int(tr['first_nonfinite_step']) + 1}; the last good state is kept in "
                             f"{self.scratch.state_path}")
        metrics = PaperMetrics(run.cfg.data.num_classes, run.cfg.data.ignore_index)
        va = run.summarise(run.validate(val_loader, metrics, progress=progress))
        metrics.all_reduce(world.all_reduce_sum, run.hw.device)
        scores = metrics.compute()
        lr = run.optimizer.param_groups[0]["lr"]
        run.scheduler.step()
        entry = {**{f"train/{k}": v for k, v in tr.items() if k != "first_nonfinite_step"},
                 **{f"val/{k}": v for k, v in va.items() if k != "first_nonfinite_step"},
                 **{f"val/paper_{k}": v for k, v in scores.items()},
                 **{f"balancing/{k}": v for k, v in run.balancer.weights().items()}, "lr": lr}
        self.history.append(entry)
        if va["loss"] < self.best["val_loss"]:
            self.best = {"epoch": epoch, "val_loss": va["loss"]}
            self.best_model = _cpu_copy(run.model.state_dict())
            self.best_balancer = _cpu_copy(run.balancer.state_dict())
        finished = epoch == run.cfg.optim.epochs
        if world.is_main and (finished or self.due()):
            self.save(self.snapshot(epoch, 0, finished))
        return {"entry": entry, "train": tr["loss"], "val": va["loss"], "scores": scores}

    def fit(self, train_loader, val_loader, *, live=None, progress: bool = True) -> None:
        """The remaining epochs, with a line per epoch and a dvclive step per epoch."""
        world, epochs_total = self.run.world, self.run.cfg.optim.epochs
        if live is not None:
            for entry in self.history:  # the log is rebuilt from the state, so it never holds a lost epoch twice
                _log_epoch(live, entry)
        epochs = tqdm(range(self.start_epoch, epochs_total + 1), desc=self.name, disable=None if progress else True,
                      file=sys.stderr)
        started = time.monotonic()
        with StopRequest() as self.stop:
            for epoch in epochs:
                epoch_start = time.monotonic()
                done = self.epoch(epoch, train_loader, val_loader, progress)
                scores = done["scores"]
                epochs.set_postfix(train=f"{done['train']:.4f}", val=f"{done['val']:.4f}",
                                   **{k: f"{scores[k]:.3f}" for k in ("miou", "abs_err") if k in scores})
                if world.is_main:
                    now = time.monotonic()
                    per_epoch = (now - started) / (epoch - self.start_epoch + 1)  # this process's epochs: resumes too
                    tqdm.write(epoch_line(self.name, epoch, epochs_total, done["train"], done["val"], scores,
                                          now - epoch_start, per_epoch * (epochs_total - epoch)), file=sys.stderr)
                if live is not None:
                    _log_epoch(live, done["entry"])

    def best_checkpoint(self) -> dict[str, Any]:
        """What ``best.pt`` holds: the best epoch's weights and what decided them."""
        run = self.run
        return {"model": self.best_model, "balancer": self.best_balancer, "config": dataclasses.asdict(run.cfg),
                "method": run.method.name, "seed": self.seed, "epoch": self.best["epoch"],
                "depth_kind": self.depth_kind, "amp": run.hw.amp, "config_hash": self.scratch.digest,
                "run_config": run_config(self.scratch.config)}

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        return {"best_epoch": self.best["epoch"], "best_val_loss": self.best["val_loss"],
                "device": str(self.run.hw.device), "amp": self.run.hw.amp, "world_size": self.run.world.size,
                "last_val": {k[4:]: v for k, v in last.items() if k.startswith("val/")}}


def _prepared(cfg: DatasetConfig, data_dir: Path) -> tuple[PreparedSplit, PreparedSplit]:
    train_split, val_split = PreparedSplit(data_dir, "train"), PreparedSplit(data_dir, "val")
    if train_split.meta["num_classes"] != cfg.data.num_classes:
        raise XTaskError(f"{data_dir}/meta.json: prepared for {train_split.meta['num_classes']} classes but params "
                         f"say {cfg.name}.data.num_classes = {cfg.data.num_classes}; rerun the prepare stage")
    return train_split, val_split


@dataclass(frozen=True)
class Storage:
    """Where a run reads and writes: the prepared data, the model folder (``best.pt`` once finished), the
    root of the resumable states, how often a state is written, and whether a saved one is discarded."""
    data: Path
    out: Path
    scratch: Path
    save_every_s: float = SAVE_EVERY_S
    restart: bool = False


def train(cfg: DatasetConfig, method: Method, seed: int, storage: Storage, *, world: World = World(), live=None,
          progress: bool = True) -> dict[str, Any]:
    """Train ``method`` with ``seed`` on the prepared data; write ``best.pt`` to the model folder when done.

    The resumable state is written under ``storage.scratch`` (at most every ``save_every_s`` seconds, and
    at SIGTERM/SIGINT); a run of the same params, code, data, method and seed resumes it, and the
    folder is removed once the run finished. ``restart`` discards it. Returns a summary.

    Under torchrun (``world`` of several ranks) every rank calls this; rank 0 alone writes files and
    logs, and the state is written at epoch ends only (see ``xtask.core.distributed``)."""
    hw = resolve(cfg.runtime, cfg.protocol)
    check_batch(cfg.optim.batch_size, world, f"{cfg.name}.optim.batch_size")
    hw = dataclasses.replace(hw, device=setup(world, hw.device))
    progress = progress and world.is_main
    if world.is_main:  # before any data or model: where the hours will go, in every log
        print(describe_device(hw.device) + (f" x {world.size} processes" if world.distributed else ""),
              file=sys.stderr, flush=True)
    seed_everything(seed)
    train_split, val_split = _prepared(cfg, Path(storage.data))
    scratch = Scratch(storage.scratch, cfg.name, method.name, seed,
                      hashed_config(cfg, seed, method.name, train_split.meta))
    state = None if storage.restart else scratch.load()
    if world.is_main:
        _note_others(scratch)

    run = TrainingRun(cfg, method, hw, world, pretrained=state is None)
    loop = Loop(run, scratch, seed, train_split.meta["depth_kind"], save_every_s=storage.save_every_s)
    train_loader = make_loader(train_split, cfg.optim.batch_size, shuffle=True, generator=loop.order,
                               workers=cfg.runtime.workers, world=world)
    val_loader = make_loader(val_split, cfg.optim.batch_size, shuffle=False, workers=cfg.runtime.workers, world=world)
    if state is not None:
        loop.resume(state)
    loop.fit(train_loader, val_loader, live=live, progress=progress)
    if world.is_main:
        checkpoint.save(Path(storage.out) / "best.pt", loop.best_checkpoint())
        scratch.remove()
    return loop.summary()
