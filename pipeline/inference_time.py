"""Inference time: images/s and latency (median, p90) at batch 1 at the params' height x width, direct
predictions only and full (with the TaskTransferNets) -> metrics/<dataset>/xtask/inference.json.

Times models/<dataset>/xtask/seed<k>/best.pt, or --checkpoint (either format); with --random-weights,
or when the default checkpoint does not exist, a randomly initialised model of the same architecture
(the JSON says so).
"""
import argparse
import sys
from pathlib import Path

from xtask.hardware import resolve
from xtask.inference_time import inference_time
from xtask.io import write_json

from .cli import dataset_config, dataset_parser, run


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main() -> None:
    # XTask only: the direct-vs-full comparison is about its TaskTransferNets
    parser = dataset_parser(__doc__, seed=True, method=False)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to time (default models/<dataset>/xtask/seed<k>/best.pt)")
    parser.add_argument("--random-weights", action="store_true",
                        help="time a randomly initialised model of the params' architecture (the time does not "
                             "depend on the weights; the pipeline's stage uses this, so it needs no trained model)")
    parser.add_argument("--warmup", type=_positive, default=None,
                        help="untimed passes per mode (default 5 CPU, 50 GPU)")
    parser.add_argument("--iters", type=_positive, default=None, help="timed passes per mode (default 20 CPU, 300 GPU)")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default=None, help="override the params' amp")
    parser.add_argument("--out", type=Path, default=None, help="JSON (default metrics/<dataset>/xtask/inference.json)")
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    if args.random_weights and args.checkpoint is not None:
        parser.error("--random-weights and --checkpoint exclude each other")
    ckpt = args.checkpoint
    if args.random_weights:
        ckpt = None
    elif ckpt is None:
        ckpt = Path("models") / cfg.name / "xtask" / f"seed{args.seed}" / "best.pt"
        if not ckpt.exists():
            print(f"inference_time: {ckpt} does not exist; timing a randomly initialised model", file=sys.stderr)
            ckpt = None
    hw = resolve(cfg, args.device, amp_override=args.amp)
    gpu = hw.device.type == "cuda"
    result = inference_time(cfg, hw, ckpt, warmup=args.warmup or (50 if gpu else 5),
                            iters=args.iters or (300 if gpu else 20))
    out = args.out or Path("metrics") / cfg.name / "xtask" / "inference.json"
    write_json(out, result)
    d, f = result["direct"], result["full"]
    print(f"{cfg.name} on {result['device_name']} ({result['device']}, amp {result['amp']}), batch 1 at "
          f"{cfg.height}x{cfg.width}: direct {d['images_per_s']:.1f} img/s (median {d['latency_ms_median']:.2f} ms), "
          f"full {f['images_per_s']:.1f} img/s (median {f['latency_ms_median']:.2f} ms) -> {out}")


if __name__ == "__main__":
    run(main)
