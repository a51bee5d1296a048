"""Expected wall time of the paper's table (datasets x methods x seeds) on G GPUs: arithmetic, not a measurement.

Work per run = training images x 3 x forward FLOPs (a training step costs 3 forwards: measured for XTask,
214.4 / 71.5 and 726.6 / 242.4 in benchmarks/README.md) + validation images x forward FLOPs, every epoch.
Forward FLOPs are counted here with torch's FlopCounterMode on the meta device (no compute: XTask's come
out as the 71.5 and 242.4 GFLOPs xtask.tools.bench measured). The throughput is an *assumption* (no GPU was
at hand): --tflops per GPU, shared equally by the jobs on it. The default, 15 and 50 TFLOP/s, is the fp32
range docs/gpus.md plans with; the first assumption, 100 fp32 and 200 bf16, is likely several times too
optimistic for the paper's small batches. Runs are queued longest first, as
docs/gpus.md queues them, and each takes the least-loaded GPU with a free slot (xtask/runtime/gpu_slots.py).

    python benchmarks/table_time.py --tflops 15 50 --gpus 1 8 --jobs-per-gpu 1 2 3 --job-fraction 0.5
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from xtask.common.config import load_params  # noqa: E402
from xtask.common.methods import METHODS  # noqa: E402
from xtask.data.prepare import FULL_SIZES  # noqa: E402
from xtask.core.model import build_model  # noqa: E402

STEP_PER_FORWARD = 3.0  # measured for XTask (benchmarks/README.md); assumed for the other methods


def forward_gflops(cfg, method: str) -> float:
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.data.num_classes, METHODS[method])
        x = torch.empty(1, 3, cfg.data.height, cfg.data.width)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def run_tflop(cfg, method: str) -> float:
    """One run's work in TFLOP: training steps and the validation pass of every epoch."""
    fwd, sizes = forward_gflops(cfg, method), FULL_SIZES[cfg.data.format]
    return cfg.optim.epochs * (sizes["train"] * STEP_PER_FORWARD * fwd + sizes["val"] * fwd) / 1e3


def makespan(work: list[float], gpus: int, per_gpu: int, tflops: float, job_tflops: float) -> float:
    """Seconds until the last run ends: runs start in the given order on the least-loaded GPU with a free
    slot; the n runs on a GPU each go at min(job_tflops, tflops / n): one small-batch run alone may not
    fill a GPU (job_tflops < tflops), several share what it has."""
    queue, running = list(work), [[] for _ in range(gpus)]  # per GPU: remaining TFLOP of its runs
    t = 0.0
    while queue or any(running):
        while queue and min(len(r) for r in running) < per_gpu:
            min(running, key=len).append(queue.pop(0))
        rates = [min(job_tflops, tflops / len(r)) if r else 0.0 for r in running]
        dt = min(w / rate for r, rate in zip(running, rates) for w in r)  # time to the next finish
        for r, rate in zip(running, rates):
            r[:] = [w - dt * rate for w in r if w - dt * rate > 1e-9]
        t += dt
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, nargs="+", default=[15.0, 50.0],
                        help="assumed sustained TFLOP/s per GPU (default: 15 and 50, the fp32/TF32 range to plan "
                             "with; docs/gpus.md)")
    parser.add_argument("--job-fraction", type=float, default=1.0,
                        help="the share of --tflops one run alone sustains (assumed; default 1: one run fills a GPU)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--jobs-per-gpu", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    params = load_params()
    runs = []
    for name in ("cityscapes", "nyu"):
        cfg = params.dataset(name)
        for method in ("xtask", "mtl", "stl_seg", "stl_depth"):
            fwd, work = forward_gflops(cfg, method), run_tflop(cfg, method)
            print(f"{name:10s} {method:9s} forward {fwd:6.1f} GFLOP/img  step {STEP_PER_FORWARD * fwd:6.1f}  "
                  f"run {work:9.0f} TFLOP")
            runs += [work] * args.seeds
    runs.sort(reverse=True)
    total = sum(runs)
    print(f"table: {len(runs)} runs, {total:.0f} TFLOP")
    for tflops in args.tflops:
        for gpus in args.gpus:
            bound = total / (gpus * tflops)
            spans = ", ".join(f"J={j}: {makespan(runs, gpus, j, tflops, tflops * args.job_fraction) / 3600:.2f} h"
                              for j in args.jobs_per_gpu)
            print(f"{tflops:5.0f} TFLOP/s x {gpus} GPU: work / throughput {bound / 3600:.2f} h; queued: {spans}")


if __name__ == "__main__":
    main()
