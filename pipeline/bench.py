"""Benchmark: throughput of training, evaluation, loading and table metrics at the paper's shapes.

Prints one JSON object per dataset, keyed by the dataset's name. The shapes, batch size and model come
from the dataset's params.yaml section (Cityscapes: bs 8, 128x256, 7 classes; NYUv2: bs 6, 288x384, 13).
"""
import argparse
import dataclasses
import json

from xtask.tools.bench import bench
from xtask.common.config import load_params
from xtask.training.hardware import resolve

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=("cityscapes", "nyu"), action="append",
                        help="dataset shapes to benchmark (repeatable; default both)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                        help="autocast dtype (auto: bf16 on a GPU that has it, off on a CPU)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 30 on GPU)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    for name in args.dataset or ["cityscapes", "nyu"]:
        cfg = params.dataset(name)
        changes = {"compile": args.compile or cfg.compile}
        if args.channels_last:
            changes["channels_last"] = args.channels_last
        cfg = dataclasses.replace(cfg, **changes)
        hw = resolve(cfg, args.device, amp_override=args.amp)
        gpu = hw.device.type == "cuda"
        steps = args.steps or (30 if gpu else 3)
        result = bench(cfg, hw, steps=steps, warmup=(10 if hw.compile else 3) if gpu else 1)
        print(json.dumps({name: result}), flush=True)


if __name__ == "__main__":
    run(main)
