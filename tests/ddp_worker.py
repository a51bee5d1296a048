"""Run by tests/test_distributed.py, alone or under torchrun (2 gloo processes on the CPU).

    python ddp_worker.py steps|train ROOT OUT BALANCING

``steps``: two optimiser steps with BatchNorm in eval mode (so no per-rank batch statistics), then
rank 0 saves the weights: DDP's result must equal one process's up to float summation order.
``train``: the whole training loop; rank 0 saves its summary. ROOT: the prepared data.
"""
import json
import sys
from pathlib import Path

import torch

from xtask.common.prepared import PreparedSplit
from xtask.core.batches import batch_spec, iterate, make_loader
from xtask.core.distributed import setup, teardown, world_from_env, wrap
from xtask.core.model import build_model
from xtask.training.engine import seed_everything
from xtask.core.hardware import resolve
from xtask.common.methods import METHODS
from xtask.training.train import make_optimisation, train, train_step

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_config  # noqa: E402


def config(balancing: str):
    # the original's GradNorm cannot run under DDP (its second-order term); the clean one can
    return tiny_config(uncertainty_weights=balancing == "uncertainty", gradnorm=balancing == "gradnorm",
                       protocol="corrected" if balancing == "gradnorm" else "original")


def steps(cfg, root: Path, out: Path, world) -> None:
    hw = resolve(cfg)
    setup(world, hw.device)
    seed_everything(0)
    model = hw.place(build_model(cfg))
    model.eval()  # BatchNorm from running statistics: each image's output independent of its batch
    run_model = wrap(model, world, hw.device)
    balancer, _, _ = make_optimisation(cfg, METHODS["xtask"], model, hw, world)
    # plain SGD: the weights then differ only as much as the gradients do (Adam's first steps
    # turn a rounding difference in a near-zero gradient into a full step)
    optimizer = torch.optim.SGD([*model.parameters(), *balancer.parameters()], lr=0.01)
    split = PreparedSplit(root, "train")
    loader = make_loader(split, cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                         world=world)
    augment = torch.Generator().manual_seed(1)
    batches = iterate(loader, hw.device, batch_spec(cfg), augment_generator=augment)
    for _, batch in zip(range(2), batches):
        train_step(run_model, balancer, cfg, hw, batch, optimizer, world=world)
        balancer.after_step()
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
            summary = train(cfg, 0, root, out.parent / "run", scratch_root=out.parent / "scratch", progress=False,
                            world=world)
            if world.is_main:
                out.write_text(json.dumps(summary))
    finally:
        teardown(world)


if __name__ == "__main__":
    main()
