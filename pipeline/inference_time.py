"""Inference time: images/s and latency (median, p90) at batch 1 at the params' height x width, direct
predictions only and full (with the TaskTransferNets) -> --out (JSON).

Times --checkpoint (either format), or with --random-weights a randomly initialised model of the same
architecture (the time does not depend on the weights; the pipeline's stage uses this, so it needs no
trained model); the JSON says which.
"""
import argparse

from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.common.io import write_json
from xtask.core.hardware import resolve
from xtask.evaluation.inference_time import inference_time


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main() -> None:
    # XTask only: the direct-vs-full comparison is about its TaskTransferNets
    parser = dataset_parser(__doc__, seed=True, method=False)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="checkpoint to time (a train stage's best.pt, or a model.pth)")
    which.add_argument("--random-weights", action="store_true",
                       help="time a randomly initialised model of the params' architecture")
    parser.add_argument("--warmup", type=_positive, default=None,
                        help="untimed passes per mode (default 5 CPU, 50 GPU)")
    parser.add_argument("--iters", type=_positive, default=None, help="timed passes per mode (default 20 CPU, 300 GPU)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=None, help="override the params' amp")
    path_arg(parser, "--out", "the JSON to write")
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    hw = resolve(cfg.runtime, cfg.protocol, args.device, amp_override=args.amp)
    gpu = hw.device.type == "cuda"
    result = inference_time(cfg, hw, args.checkpoint, warmup=args.warmup or (50 if gpu else 5),
                            iters=args.iters or (300 if gpu else 20))
    write_json(args.out, result)
    d, f = result["direct"], result["full"]
    print(f"{cfg.name} on {result['device_name']} ({result['device']}, amp {result['amp']}), batch 1 at "
          f"{cfg.data.height}x{cfg.data.width}: direct {d['images_per_s']:.1f} img/s (median {d['latency_ms_median']:.2f} ms), "
          f"full {f['images_per_s']:.1f} img/s (median {f['latency_ms_median']:.2f} ms) -> {args.out}")


if __name__ == "__main__":
    run(main)
