"""Predict segmentation and depth for image files (or folders of them) with a checkpoint, this project's
or the original xtask_mt's model.pth (detected from its content).

Each image is preprocessed as evaluation does for --dataset (resized to the params' height x width,
ImageNet-normalised); writes <stem>_seg.png (the dataset's colours) and <stem>_depth.png (colour-mapped)
to --out, and with --raw also <stem>_seg.npy (int64 class indices, H x W) and <stem>_depth.npy
(float32 direct depth, H x W, in the dataset's unit).
"""
import argparse
from pathlib import Path

from xtask.common.config import load_params
from xtask.tools.predict import predict_files

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt of the train stage, or a model.pth")
    parser.add_argument("--dataset", required=True,
                        help="dataset section of the params (cityscapes, nyu, synthetic): size, classes, colours")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--raw", action="store_true", help="also write the predictions as .npy arrays")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="override the params' device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("images", nargs="+", type=Path, help="image files (.png .jpg .jpeg; .npy for nyu) or folders")
    args = parser.parse_args()
    cfg = load_params(args.params).dataset(args.dataset)
    written = predict_files(cfg, args.checkpoint, args.images, args.out, raw=args.raw, device_override=args.device,
                            progress=not args.no_progress)
    print(f"predict: {len(written)} files in {args.out}")


if __name__ == "__main__":
    run(main)
