"""Ways to weigh the label loss against the image loss: fixed, uncertainty weights, GradNorm."""
from __future__ import annotations

import torch
from torch import nn


class FixedWeights(nn.Module):
    """The plain sum ``label_loss + image_loss``."""

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        return label_loss + image_loss

    def backward(self, label_loss: torch.Tensor, image_loss: torch.Tensor, scaler=None) -> torch.Tensor:
        """Backpropagate the combined loss (through ``scaler`` for fp16); return it, detached."""
        total = self.combine(label_loss, image_loss)
        (scaler.scale(total) if scaler is not None else total).backward()
        return total.detach()

    def after_step(self) -> None:
        pass

    def sync_grads(self, world) -> None:
        """Average our own parameters' gradients over data-parallel ranks (DDP only covers the model's)."""
        if world.distributed:
            for p in self.parameters():
                if p.grad is not None:
                    p.grad = world.mean(p.grad)

    def weights(self) -> dict[str, float]:
        return {}


class UncertaintyWeights(FixedWeights):
    """Kendall et al. 2018: learnable log-variances, optimised with the model.

    ``log_vars[0]`` belongs to the image (depth) loss and ``log_vars[1]`` to the label (seg) loss,
    as in the original's checkpoints and logs: L = 0.5 exp(-s) L_task + s for each task.
    """

    def __init__(self):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(2))

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        image = 0.5 * torch.exp(-self.log_vars[0]) * image_loss + self.log_vars[0]
        label = 0.5 * torch.exp(-self.log_vars[1]) * label_loss + self.log_vars[1]
        return label + image

    def weights(self) -> dict[str, float]:
        # sigma per task, as the original prints them
        sig = torch.exp(self.log_vars.detach()).sqrt().tolist()
        return {"sigma_depth": sig[0], "sigma_seg": sig[1]}


class GradNorm(FixedWeights):
    """Chen et al. 2018: task weights trained so that the tasks' gradient norms on a shared layer
    (the encoder's last conv, as the original) grow in proportion to their relative inverse training rates.

    The weights get their gradient from the GradNorm objective only, and are renormalised to sum to
    the number of tasks after every optimiser step.

    Since the weights are positive, the norm of the weighted task gradient is ``w_i * ||grad L_i||``;
    computing it that way needs no second-order graph, and lets data-parallel ranks average the task
    gradients and losses (``world``) first, so every rank derives the same weights from the global batch.
    """

    def __init__(self, shared: nn.Parameter, alpha: float = 1.5, world=None):
        super().__init__()
        self.task_weights = nn.Parameter(torch.ones(2))
        self.alpha = alpha
        self._shared = [shared]  # a list, so the encoder weight is not registered as our parameter
        self._world = world
        self.register_buffer("initial_losses", torch.zeros(2))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    def combine(self, label_loss: torch.Tensor, image_loss: torch.Tensor) -> torch.Tensor:
        return self.task_weights[0] * label_loss + self.task_weights[1] * image_loss

    def backward(self, label_loss: torch.Tensor, image_loss: torch.Tensor, scaler=None) -> torch.Tensor:
        if scaler is not None:
            raise ValueError("GradNorm does not support fp16 loss scaling")
        shared = self._shared[0]
        mean = self._world.mean if self._world is not None else (lambda t: t)
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
        self.task_weights.grad = weight_grad
        return total.detach()

    def sync_grads(self, world) -> None:
        pass  # the weights' gradient is computed from rank-averaged quantities: already the same everywhere

    @torch.no_grad()
    def after_step(self) -> None:
        w = self.task_weights.clamp_min(1e-6)
        self.task_weights.copy_(w * (2.0 / w.sum()))

    def weights(self) -> dict[str, float]:
        w = self.task_weights.detach().tolist()
        return {"weight_seg": w[0], "weight_depth": w[1]}


def make_balancer(kind: str, shared: nn.Parameter, gradnorm_alpha: float = 1.5, world=None) -> FixedWeights:
    """``world``: the data-parallel ranks GradNorm averages over (None: a single process)."""
    if kind == "none":
        return FixedWeights()
    if kind == "uncertainty":
        return UncertaintyWeights()
    if kind == "gradnorm":
        return GradNorm(shared, alpha=gradnorm_alpha, world=world)
    raise ValueError(f"balancing: expected none, uncertainty or gradnorm, got {kind!r}")
