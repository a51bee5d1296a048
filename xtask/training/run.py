"""One training run's model and everything that updates it, worked out once: ``TrainingRun``.

It holds the network (placed, maybe compiled and DDP-wrapped), the loss balancer, Adam, the StepLR
schedule, the fp16 loss scaler, the hardware, the data-parallel world and the protocol, and does one
thing per method: ``train_step`` (one optimisation step), ``train_epoch``, ``validate`` and
``state_dict``/``load_state_dict`` (resume). The loop around it (epochs, the best model, the resumable
state, logs) is ``xtask.training.train``; bench, parity and the trace drive this same object.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import torch
from tqdm import tqdm

from xtask.common.config import DatasetConfig
from xtask.common.errors import XTaskError
from xtask.common.methods import Method
from xtask.common.metrics import PaperMetrics
from xtask.core.batches import Batch, batch_spec, iterate
from xtask.core.distributed import World, wrap
from xtask.core.hardware import Hardware
from xtask.core.model import XTaskOutput, build_model
from xtask.core.protocol import protocol_of
from xtask.training.balancing import Balancer, Context, make_balancer
from xtask.training.losses import Objective

ADAM_DEFAULT_BETAS = (0.9, 0.999)  # main_stl.py's Adam: PyTorch's defaults


class TrainingRun:
    """``cfg``'s ``method`` on ``hw`` (one rank of ``world``). ``model``: a network to train instead of a new
    one of ``cfg.model`` (the parity check's seeded weights); ``pretrained``: a new network's encoder starts
    from the ``init`` section's ImageNet weights (False where a saved state replaces them anyway)."""

    def __init__(self, cfg: DatasetConfig, method: Method, hw: Hardware, world: World = World(), *,
                 model: Optional[torch.nn.Module] = None, pretrained: bool = True):
        self.cfg, self.method, self.hw, self.world = cfg, method, hw, world
        self.protocol = protocol_of(cfg.protocol)
        self.objective = Objective.of(cfg.loss, cfg.data, self.protocol, method)
        self.spec = batch_spec(cfg.data, self.protocol)
        weighting = method.balancing(cfg.balancing.weighting)
        if weighting == "gradnorm" and hw.amp == "fp16":
            raise XTaskError(f"params.yaml: {cfg.name}.protocol.amp: fp16 loss scaling is not supported with "
                             "gradnorm; use bf16 or off")
        if model is None:
            model = build_model(cfg.model, cfg.data.num_classes, method, cfg.init if pretrained else None)
        self.model = hw.place(model)
        self.train_model = hw.compiled(wrap(model, world, hw.device))
        # validation needs no gradient sync, and ranks score different numbers of batches: no DDP there
        self.val_model = hw.compiled(model) if world.distributed else self.train_model
        self.balancer: Balancer = make_balancer(weighting, Context(model, cfg.balancing, cfg.optim.lr, self.protocol,
                                                                   world)).to(hw.device)
        betas = cfg.optim.betas if method.multi_task or self.protocol.stl_dataset_betas else ADAM_DEFAULT_BETAS
        self.optimizer = hw.optimizer([*model.parameters(), *self.balancer.model_optimised()], cfg.optim.lr, betas)
        self.scaler = hw.grad_scaler()
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.optim.scheduler_step_size,
                                                         cfg.optim.scheduler_gamma)

    # -- one batch -------------------------------------------------------------------------------------

    def _seg_denominator(self, batch: Batch) -> Optional[torch.Tensor]:
        """For a rank's slice: the labelled pixels of the whole global batch, times the slice's share of
        its images (undone by the loss scale in ``train_step``), so the ranks' seg terms average to the
        global batch's pixel mean. None alone (PyTorch's own mean)."""
        if not self.world.distributed or batch.total is None:
            return None
        labelled = self.world.all_reduce_sum((batch.seg != self.spec.ignore_index).sum().double())  # no sync
        return (labelled * batch.image.shape[0] / batch.total).clamp_min(1)

    def _share(self, batch: Batch) -> float:
        """This rank's loss scale: its images over an even share of the global batch. DDP averages the
        ranks' gradients, so image-mean losses scaled so add up to exactly the global batch's gradient."""
        if not self.world.distributed or batch.total is None:
            return 1.0
        return batch.image.shape[0] * self.world.size / batch.total

    def forward(self, model: torch.nn.Module, batch: Batch, seg_denominator: Optional[torch.Tensor] = None
                ) -> tuple[XTaskOutput, dict[str, torch.Tensor]]:
        """(outputs, loss terms) of one batch; the terms in fp32 whatever the autocast dtype."""
        with self.hw.autocast():
            out = model(self.hw.input(batch.image))
        return out, self.objective.terms(out, batch, seg_denominator)

    def train_step(self, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One optimisation step; returns the loss terms and the balanced total (on the device)."""
        _, terms = self.forward(self.train_model, batch, self._seg_denominator(batch))
        self.optimizer.zero_grad(set_to_none=True)
        label, image = self.objective.combine(terms)
        share = self._share(batch)
        if share != 1.0:
            label, image = label * share, image * share
        total = self.balancer.backward(label, image, self.scaler)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.balancer.after_step()
        return terms, total

    def val_step(self, batch: Batch) -> tuple[XTaskOutput, dict[str, torch.Tensor], torch.Tensor]:
        """(outputs, loss terms, balanced total) of one batch, without gradients."""
        out, terms = self.forward(self.val_model, batch)
        return out, terms, self.balancer.combine(*self.objective.combine(terms))

    # -- one pass ----------------------------------------------------------------------------------------

    def train_epoch(self, loader, augment: torch.Generator, *, sums: Optional[torch.Tensor] = None,
                    on_step: Optional[Callable[[int, torch.Tensor], None]] = None, progress: bool = True
                    ) -> torch.Tensor:
        """One epoch of steps over ``loader`` (from its sampler's ``skip``), augmenting from ``augment``;
        ``sums``: the epoch's sums so far (a resumed epoch). ``on_step(step, sums)`` runs after every step
        (the stop check). Returns the loss sums (``summarise``)."""
        self.train_model.train(True)
        with torch.enable_grad():
            return self._pass(loader, augment, sums, on_step, progress, "train")

    def validate(self, loader, metrics: Optional[PaperMetrics] = None, *, progress: bool = True) -> torch.Tensor:
        """One pass over ``loader`` without gradients, updating ``metrics``; returns the loss sums."""
        self.val_model.train(False)
        with torch.no_grad():
            return self._pass(loader, None, None, None, progress, "val", metrics)

    def _pass(self, loader, augment, sums, on_step, progress: bool, desc: str,
              metrics: Optional[PaperMetrics] = None) -> torch.Tensor:
        """Nothing in the loop waits for the device: the sums ([terms..., total, images, first non-finite
        step]) stay there. A batch's losses weigh by its images (``image_weighted_val_loss``), or, as the
        original sums its batches' mean losses, one per global batch; ``summarise`` divides by the images."""
        device, terms_of = self.hw.device, self.method.terms
        if sums is None:
            sums = torch.zeros(len(terms_of) + 3, dtype=torch.float64, device=device)
            sums[-1] = -1
        step = loader.sampler.skip
        bar = tqdm(iterate(loader, device, self.spec, augment_generator=augment), total=len(loader) - step,
                   desc=desc, leave=False, disable=None if progress else True, file=sys.stderr)
        for batch in bar:
            if desc == "train":
                terms, total = self.train_step(batch)
            else:
                out, terms, total = self.val_step(batch)
                if metrics is not None:
                    metrics.update(out.seg, out.depth, batch.seg, batch.depth)
            n = batch.image.shape[0]
            values = torch.stack([*(terms[t].detach().double() for t in terms_of), total.detach().double()])
            # remember the first step whose losses were not finite, still without a sync
            first_bad = torch.where((sums[-1] < 0) & ~torch.isfinite(values).all(),
                                    torch.full((), float(step), dtype=torch.float64, device=device), sums[-1])
            # a rank's slice weighs as its share of the batch
            weight = n if self.protocol.image_weighted_val_loss else n / (batch.total or n)
            sums = torch.cat([sums[:-2] + values * weight, sums[-2:-1] + n, first_bad.view(1)])
            step += 1
            if on_step is not None:
                on_step(step, sums)
        return sums

    def summarise(self, sums: torch.Tensor) -> dict[str, float]:
        """Mean losses per image from a pass's sums, added up over the ranks; the one host synchronisation
        of a pass. ``first_nonfinite_step``: the latest any rank saw (-1 if none did)."""
        if self.world.distributed:
            self.world.all_reduce_sum(sums[:-1])
            self.world.all_reduce_max(sums[-1:])
        values = sums.tolist()
        n = values[-2]
        out = {f"loss_{t}": values[i] / n for i, t in enumerate(self.method.terms)}
        out["loss"] = values[len(self.method.terms)] / n
        out["first_nonfinite_step"] = values[-1]
        return out

    # -- resume ------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "balancer": self.balancer.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.balancer.load_state_dict(state["balancer"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

