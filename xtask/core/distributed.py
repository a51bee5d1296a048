"""Data-parallel training across processes (torchrun): who this process is and how ranks agree.

One ``World`` per run, read from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK). A
plain ``python -m pipeline.train`` is a world of one, and every method below is then a no-op, so the
single-process path runs exactly the code it ran before DDP existed.

How the paper's protocol is kept: ``batch_size`` stays the *global* batch. Every rank draws the same
epoch order and the same augmentation numbers for the whole global batch, then takes its own slice
of it (``shard``); DDP averages the gradients, each rank's loss scaled by its share of the images, so
an image-mean loss has exactly the single-process gradient. On CUDA, BatchNorm is synchronised
(SyncBatchNorm: statistics over the global batch, as in one process); on CPU (gloo) PyTorch has no
SyncBatchNorm, so each rank normalises over its own slice, which is the one stated difference.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

from xtask.common.errors import XTaskError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and progress bars; the others only compute."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """(first, count) of this rank's slice of a global batch of ``n``: sizes differ by at most one."""
        base, extra = divmod(n, self.size)
        first = self.rank * base + min(self.rank, extra)
        return first, base + (1 if self.rank < extra else 0)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``t`` (a new tensor; differentiable paths are not kept)."""
        if not self.distributed:
            return t
        out = t.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """The world torchrun describes in ``env``; a world of one without torchrun."""
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
    except ValueError:
        raise XTaskError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if size < 1 or not 0 <= rank < size:
        raise XTaskError(f"RANK={rank} is outside WORLD_SIZE={size} (set by torchrun)")
    return World(rank, size, local_rank)


def setup(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on CPU); return this rank's device."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise XTaskError(f"LOCAL_RANK={world.local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                             "launch.nproc_per_node must not exceed the GPUs per node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
    return device


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """DDP around ``model`` (SyncBatchNorm first on CUDA); the model itself when alone."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def check_batch(batch_size: int, world: World, key: str) -> None:
    if world.size > batch_size:
        raise XTaskError(f"params.yaml: {key}: the global batch ({batch_size}) is smaller than the number of "
                         f"processes ({world.size}); every process needs at least one image per step")
