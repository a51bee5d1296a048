"""Run by tests/test_distributed.py, alone or under torchrun (2 gloo processes on the CPU).

    python ddp_worker.py steps|train ROOT OUT BALANCING

``steps``: two optimiser steps with BatchNorm in eval mode (so no per-rank batch statistics), then
rank 0 saves the weights: DDP's result must equal one process's up to float summation order.
``train``: the whole training loop; rank 0 saves its summary. ROOT: the prepared data.
"""
import dataclasses
import json
import sys
from pathlib import Path

import torch

from xtask.common.prepared import PreparedSplit
from xtask.core.batches import iterate, make_loader
from xtask.core.distributed import setup, teardown, world_from_env
from xtask.core.hardware import resolve
from xtask.common.methods import METHODS
from xtask.training.run import TrainingRun
from xtask.training.train import Storage, seed_everything, train

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_config  # noqa: E402


def config(balancing: str):
    # the original's GradNorm cannot run under DDP (its second-order term); the clean one can
    return tiny_config(weighting=balancing, **{"protocol.name": "corrected" if balancing == "gradnorm" else "original"})


def steps(cfg, root: Path, out: Path, world) -> None:
    hw = resolve(cfg.runtime, cfg.protocol)
    hw = dataclasses.replace(hw, device=setup(world, hw.device))
    seed_everything(0)
    run = TrainingRun(cfg, METHODS["xtask"], hw, world)
    model, balancer = run.model, run.balancer
    model.eval()  # BatchNorm from running statistics: each image's output independent of its batch
    # plain SGD: the weights then differ only as much as the gradients do (Adam's first steps
    # turn a rounding difference in a near-zero gradient into a full step)
    run.optimizer = torch.optim.SGD([*model.parameters(), *balancer.model_optimised()], lr=0.01)
    split = PreparedSplit(root, "train")
    loader = make_loader(split, cfg.optim.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                         world=world)
    augment = torch.Generator().manual_seed(1)
    batches = iterate(loader, hw.device, run.spec, augment_generator=augment)
    for _, batch in zip(range(2), batches):
        run.train_step(batch)  # the balancer's after_step included
    if world.is_main:
        grads = {k: p.grad for k, p in model.named_parameters()}
        torch.save({"model": model.state_dict(), "balancer": balancer.state_dict(), "grads": grads}, out)


def main() -> None:
    mode, root, out, balancing = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    world = world_from_env()
    cfg = config(balancing)
    try:
        if mode == "steps":
            steps(cfg, root, out, world)
        else:
            summary = train(cfg, METHODS["xtask"], 0, Storage(root, out.parent / "run", out.parent / "scratch"),
                            world=world, progress=False)
            if world.is_main:
                out.write_text(json.dumps(summary))
    finally:
        teardown(world)


if __name__ == "__main__":
    main()
