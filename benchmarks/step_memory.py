"""Memory of one training run at the paper's shapes, estimated on the CPU (no GPU was at hand).

For each paper section (params.yaml, as the paper trains it: fp32, its batch and image size, ResNet34 and the
original's widths), in a fresh process: the model, its Adam and a random batch at the paper's shape, then
two training steps (``TrainingRun.train_step``, the code training runs), with the process's peak resident memory read
before and after. The growth is what a step adds on top of the weights: gradients, Adam's two moments
(created at the first step), the activations autograd keeps for the backward pass and the temporaries of
the backward pass itself. On a GPU the same tensors live in device memory; the CUDA context, cuDNN's
workspace and the caching allocator's slack come on top (docs/gpus.md gives the range).

    python benchmarks/step_memory.py            # both paper sections, one process each
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

MIB = 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(name: str, method: str = "xtask", steps: int = 2) -> dict:
    import torch

    from xtask.common.config import load_params
    from xtask.common.methods import METHODS
    from xtask.tools.bench import random_batch
    from xtask.core.hardware import Hardware
    from xtask.training.run import TrainingRun

    torch.manual_seed(0)
    cfg = load_params().dataset(name)
    hw = Hardware(torch.device("cpu"), None, False, False)  # fp32, as the paper's sections train
    run = TrainingRun(cfg, METHODS[method], hw, pretrained=False)
    run.train_model.train()
    batch = random_batch(cfg.data, cfg.optim.batch_size, hw.device)
    weights = sum(p.numel() * p.element_size() for p in run.model.parameters()) / MIB
    before = _peak_mib()
    for _ in range(steps):
        run.train_step(batch)
    after = _peak_mib()
    return {"dataset": name, "method": method, "batch": cfg.optim.batch_size,
            "shape": [cfg.data.height, cfg.data.width], "enc_layers": cfg.model.enc_layers, "weights_mib": round(weights, 1), "peak_before_step_mib": round(before),
            "peak_after_steps_mib": round(after), "step_growth_mib": round(after - before),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2])))
        return
    for name in ("cityscapes", "nyu"):  # a fresh process each: one run's peak is not hidden by the other's
        r = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        print(r.stdout.strip())


if __name__ == "__main__":
    main()
