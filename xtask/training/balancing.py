"""Ways to weigh the label loss against the image loss (``balancing.weighting``): none, uncertainty weights,
GradNorm (Chen et al. 2018, and the original code's version of it, which ``protocol: original`` trains with).

Each is a ``Balancer``, registered under its params name; ``make_balancer`` builds the one a run asks for."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from xtask.common.config import WEIGHTINGS, BalancingConfig
from xtask.common.errors import XTaskError
from xtask.core.distributed import World
from xtask.core.protocol import Protocol


class Balancer(nn.Module):
    """The interface a training run drives, in this order per step: ``backward`` (the balanced loss's
    gradients, averaged over data-parallel ranks where the balancer's own need it), the model's optimiser
    step, ``after_step``. ``start_epoch`` comes before an epoch's first step; ``combine`` is the balanced
    loss without gradients (validation); ``weights`` what the per-epoch log shows. Its parameters are
    trained by the model's optimiser unless ``model_optimised`` says otherwise."""

    def __init__(self, world: World = World()):
        super().__init__()
        self._world = world

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, label_loss: torch.Tensor, image_loss: torch.Tensor, scaler=None) -> torch.Tensor:
        """Backpropagate the combined loss (through ``scaler`` for fp16); return it, detached."""
        total = self.combine(label_loss, image_loss)
        (scaler.scale(total) if scaler is not None else total).backward()
        if self._world.distributed:  # DDP averages the model's gradients, not ours
            for p in self.parameters():
                if p.grad is not None:
                    p.grad = self._world.mean(p.grad)
        return total.detach()

    def after_step(self) -> None:
        pass

    def start_epoch(self, epoch: int) -> None:
        """Told the (1-based) epoch before its training steps; only the original GradNorm needs it."""

    def model_optimised(self) -> list[nn.Parameter]:
        """The parameters the model's optimiser trains along with the model (and its LR schedule)."""
        return list(self.parameters())

    def weights(self) -> dict[str, float]:
        return {}


@dataclass(frozen=True)
class Context:
    """What a balancer may be built from: the run's network, its ``balancing`` section, the model's learning
    rate, the protocol and the data-parallel ranks."""
    model: nn.Module
    balancing: BalancingConfig
    lr: float
    protocol: Protocol
    world: World = World()


BALANCERS: dict[str, Callable[[Context], Balancer]] = {}


def register(name: str):
    def add(build: Callable[[Context], Balancer]) -> Callable[[Context], Balancer]:
        BALANCERS[name] = build
        return build
    return add


def make_balancer(weighting: str, context: Context) -> Balancer:
    """The balancer registered as ``weighting`` (one of params.yaml's ``balancing.weighting`` choices)."""
    if weighting not in BALANCERS:
        raise ValueError(f"balancing.weighting: expected one of {list(BALANCERS)}, got {weighting!r}")
    return BALANCERS[weighting](context)


class FixedWeights(Balancer):
    """The plain sum ``label_loss + image_loss``."""

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        return label_loss + image_loss


class UncertaintyWeights(Balancer):
    """Kendall et al. 2018: learnable log-variances, optimised with the model.

    ``log_vars[0]`` belongs to the image (depth) loss and ``log_vars[1]`` to the label (seg) loss,
    as in the original's checkpoints and logs: L = 0.5 exp(-s) L_task + s for each task.
    """

    def __init__(self, world: World = World()):
        super().__init__(world)
        self.log_vars = nn.Parameter(torch.zeros(2))

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        image = 0.5 * torch.exp(-self.log_vars[0]) * image_loss + self.log_vars[0]
        label = 0.5 * torch.exp(-self.log_vars[1]) * label_loss + self.log_vars[1]
        return label + image

    def weights(self) -> dict[str, float]:
        # sigma per task, as the original prints them
        sig = torch.exp(self.log_vars.detach()).sqrt().tolist()
        return {"sigma_depth": sig[0], "sigma_seg": sig[1]}


class GradNorm(Balancer):
    """Chen et al. 2018: task weights trained so that the tasks' gradient norms on a shared layer
    (the encoder's last conv, as the original) grow in proportion to their relative inverse training rates.

    The weights get their gradient from the GradNorm objective only, and are renormalised to sum to
    the number of tasks after every optimiser step.

    Since the weights are positive, the norm of the weighted task gradient is ``w_i * ||grad L_i||``;
    computing it that way needs no second-order graph, and lets data-parallel ranks average the task
    gradients and losses (``world``) first, so every rank derives the same weights from the global batch.
    """

    def __init__(self, shared: nn.Parameter, alpha: float = 1.5, world: World = World()):
        super().__init__(world)
        self.task_weights = nn.Parameter(torch.ones(2))
        self.alpha = alpha
        self._shared = [shared]  # a list, so the encoder weight is not registered as our parameter
        self.register_buffer("initial_losses", torch.zeros(2))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        return self.task_weights[0] * label_loss + self.task_weights[1] * image_loss

    def backward(self, label_loss: torch.Tensor, image_loss: torch.Tensor, scaler=None) -> torch.Tensor:
        if scaler is not None:
            raise ValueError("GradNorm does not support fp16 loss scaling")
        shared = self._shared[0]
        mean = self._world.mean if self._world.distributed else (lambda t: t)
        losses = torch.stack([label_loss, image_loss])
        global_losses = mean(losses.detach())
        # the first call records the initial losses; torch.where keeps the host out of it (no sync)
        self.initial_losses.copy_(torch.where(self.initialised, self.initial_losses, global_losses))
        self.initialised.fill_(True)
        grad_norms = torch.stack([mean(torch.autograd.grad(losses[i], shared, retain_graph=True)[0]).norm()
                                  for i in range(2)])
        norms = self.task_weights * grad_norms
        ratios = global_losses / self.initial_losses.clamp_min(1e-12)
        inverse_rate = ratios / ratios.mean()
        target = (norms.mean() * inverse_rate ** self.alpha).detach()
        gradnorm_loss = (norms - target).abs().sum()
        weight_grad, = torch.autograd.grad(gradnorm_loss, self.task_weights, retain_graph=True)
        # model parameters get the weighted task gradient; the weights only the GradNorm gradient
        total = (self.task_weights.detach() * losses).sum()
        total.backward()
        # from rank-averaged quantities: the same on every rank, nothing to average
        self.task_weights.grad = weight_grad
        return total.detach()

    @torch.no_grad()
    def after_step(self) -> None:
        w = self.task_weights.clamp_min(1e-6)
        self.task_weights.copy_(w * (2.0 / w.sum()))

    def weights(self) -> dict[str, float]:
        w = self.task_weights.detach().tolist()
        return {"weight_seg": w[0], "weight_depth": w[1]}


class OriginalGradNorm(Balancer):
    """GradNorm exactly as the original's ``compute_loss_with_gradnorm`` (main_cross_cs.py and
    main_cross_nyu.py) does it, for ``protocol: original`` (``Protocol.clean_gradnorm`` lists how it
    departs from Chen et al. 2018):

    - raw weights w = [image (depth-side), label (seg-side)], starting at 1, trained by their own Adam
      (the run's lr, PyTorch's default betas, no LR schedule); the losses use the effective weights
      t = 2 / (w1 + w2) * w (t = w at the very first step), and only t is renormalised;
    - l_i = t_i * L_i * 0.5; the initial losses l0 are reset to the current l at every step of epoch 1;
    - G_i = ||d l_i / d W|| on ``shared`` (the last ResNet block's conv2) with create_graph, targets
      C_i = mean(G) * (r_i / mean(r)) ** 0.16 with r = l / l0, detached; L_grad = |G1 - C1| + |G2 - C2|;
    - the model's gradient is that of l1 + l2 plus L_grad's (second-order) gradient, as its
      ``Lgrad.backward()`` leaves it before ``optimizer.step()``; the returned (logged) loss is
      t1 * L_image + t2 * L_label, without the 0.5.
    """

    ALPHA = 0.16

    def __init__(self, shared: nn.Parameter, lr: float):
        super().__init__()
        self.raw = nn.Parameter(torch.ones(2))
        self._shared = [shared]  # a list, so the encoder weight is not registered as our parameter
        self._optimizer = torch.optim.Adam([self.raw], lr=lr)
        self._initial = torch.ones(2)
        self._renormalised = False
        self._epoch = 1
        # the last step's GradNorm quantities, detached ([depth side, seg side]): what the parity check
        # compares with the original's; kept on the device, so recording them costs no host sync
        self.last: dict[str, torch.Tensor] = {}

    @property
    def own_optimizer(self) -> torch.optim.Adam:
        """The raw weights' own Adam (the parity check reads its moments)."""
        return self._optimizer

    def set_initial_losses(self, losses: torch.Tensor) -> None:
        """The L0 the original's loop holds after epoch 1 (a parity case that starts later sets it)."""
        self._initial = losses.to(self.raw.device)

    def effective(self) -> torch.Tensor:
        """t, differentiable in the raw weights (in the original's order of operations)."""
        if not self._renormalised:
            return self.raw
        coef = 2 / (self.raw[0] + self.raw[1])
        return torch.stack([coef * self.raw[0], coef * self.raw[1]])

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        t = self.effective()
        return t[0] * image_loss + t[1] * label_loss

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def model_optimised(self) -> list[nn.Parameter]:
        return []  # the weights have their own Adam

    def backward(self, label_loss: torch.Tensor, image_loss: torch.Tensor, scaler=None) -> torch.Tensor:
        if scaler is not None:
            raise ValueError("GradNorm does not support fp16 loss scaling")
        t = self.effective()
        l1, l2 = t[0] * image_loss * 0.5, t[1] * label_loss * 0.5
        if self._epoch == 1:
            self._initial = torch.stack([l1.detach(), l2.detach()])
        l1.backward(retain_graph=True)
        l2.backward(retain_graph=True)
        shared = self._shared[0]
        g1 = torch.norm(torch.autograd.grad(l1, shared, retain_graph=True, create_graph=True)[0], 2)
        g2 = torch.norm(torch.autograd.grad(l2, shared, retain_graph=True, create_graph=True)[0], 2)
        g_avg = (g1 + g2) / 2
        lhat1, lhat2 = l1 / self._initial[0], l2 / self._initial[1]
        lhat_avg = (lhat1 + lhat2) / 2
        c1 = (g_avg * (lhat1 / lhat_avg) ** self.ALPHA).detach()
        c2 = (g_avg * (lhat2 / lhat_avg) ** self.ALPHA).detach()
        self._optimizer.zero_grad()
        lgrad = F.l1_loss(g1, c1) + F.l1_loss(g2, c2)
        lgrad.backward()
        self._optimizer.step()
        self.last = {"grad_norms": torch.stack([g1, g2]).detach(), "targets": torch.stack([c1, c2]),
                     "loss_ratios": torch.stack([lhat1, lhat2]).detach(), "l0": self._initial.detach().clone(),
                     "lgrad": lgrad.detach(), "weights_raw": self.raw.detach().clone()}
        return ((t[0] * image_loss).detach() + (t[1] * label_loss).detach())

    def after_step(self) -> None:
        self._renormalised = True

    def weights(self) -> dict[str, float]:
        t = self.effective().detach().tolist()
        return {"weight_seg": t[1], "weight_depth": t[0]}

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self._optimizer.state_dict(), "initial": self._initial.detach().cpu(),
                "renormalised": self._renormalised, "epoch": self._epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._optimizer.load_state_dict(state["optimizer"])
        self._initial = state["initial"].to(self.raw.device)
        self._renormalised, self._epoch = state["renormalised"], state["epoch"]

    def _apply(self, fn, *args, **kwargs):
        # moving the module (``.to(device)``) moves the raw weights; the cached losses follow them
        out = super()._apply(fn, *args, **kwargs)
        self._initial = fn(self._initial)
        return out


@register("none")
def _none(context: Context) -> Balancer:
    return FixedWeights(context.world)


@register("uncertainty")
def _uncertainty(context: Context) -> Balancer:
    return UncertaintyWeights(context.world)


@register("gradnorm")
def _gradnorm(context: Context) -> Balancer:
    """GradNorm on the encoder's last conv; as the original code does it under ``protocol: original``."""
    if context.protocol.clean_gradnorm:
        return GradNorm(context.model.encoder.last_conv().weight, alpha=context.balancing.gradnorm_alpha,
                        world=context.world)
    if context.world.distributed:
        raise XTaskError("gradnorm under protocol original takes second-order gradients through one process's "
                         "graph, which DDP cannot reproduce exactly; train it in one process "
                         "(launch.nproc_per_node: 1) or use protocol.name: corrected")
    return OriginalGradNorm(context.model.encoder.layer4[-1].conv2.weight, context.lr)


assert tuple(BALANCERS) == WEIGHTINGS, "params.yaml's balancing.weighting choices are the registered balancers"
