"""Predictions for image files, preprocessed exactly as the evaluated data was.

An image is read with OpenCV (NYUv2 also takes MTAN's float ``.npy`` images), resized to the params'
height x width by ``resize_nearest``, the readers' own resize (nearest neighbour, as the original and the
prepare stage), and turned into the model's input by ``to_model_input``, as evaluation does for the params'
protocol (ImageNet-normalised; NYUv2 under ``protocol: original`` in [0, 1]). For each input
``<stem>`` the outputs are (other tools rely on these names):

- ``<stem>_seg.png``: the predicted classes in the dataset's colours (``colours.seg_palette``);
- ``<stem>_depth.png``: the direct depth, colour-mapped over this image's own min..max (8-bit RGB);
- with ``raw``: ``<stem>_seg.npy`` (int64 class indices, H x W) and ``<stem>_depth.npy`` (float32
  direct depth, H x W, in the dataset's unit: Cityscapes inverse depth, NYUv2 metres).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from xtask.common.cli import run
from xtask.common.config import DatasetConfig
from xtask.common.config import load_params
from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path
from xtask.common.prepared import DEPTH_KINDS
from xtask.core.batches import normalised_input
from xtask.core.hardware import resolve
from xtask.core.predictor import Predictor
from xtask.core.protocol import protocol_of
from xtask.core.transforms import to_model_input
from xtask.data import nyu
from xtask.data.resize import resize_nearest
from xtask.reporting.colours import colourise_depth, colourise_seg, seg_palette

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def input_suffixes(fmt: str) -> tuple[str, ...]:
    return IMAGE_SUFFIXES + ((".npy",) if fmt == "nyu" else ())


def expand_inputs(paths: Sequence[Path], fmt: str) -> list[Path]:
    """Files as given, folders as their image files (sorted); refuses inputs whose outputs would collide."""
    suffixes = input_suffixes(fmt)
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise XTaskError(f"{p}: no image files ({' '.join(suffixes)}) in this folder")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise XTaskError(f"{p}: no such file or folder")
    first: dict[str, Path] = {}
    for f in files:
        if f.stem in first:
            raise XTaskError(f"{f}: its outputs would overwrite those of {first[f.stem]} (same name stem {f.stem!r})")
        first[f.stem] = f
    return files


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    # OpenCV logs its own warning for an unreadable file; the one-line XTaskError is the message
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H,W,3) RGB from an image file (grey or with alpha is converted, as IMREAD_COLOR does)."""
    with _quiet_opencv():
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise XTaskError(f"{path}: cannot be read as an image (expected PNG or JPEG)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_input(path: Path, fmt: str, height: int, width: int) -> np.ndarray:
    """The (height, width, 3) RGB image of one file, as the dataset's reader prepares it: uint8 from an
    image file, float32 in [0, 1] from MTAN's NYUv2 ``.npy``."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if fmt != "nyu":
            raise XTaskError(f"{path}: .npy inputs are NYUv2 images (MTAN's float arrays); for a {fmt}-format "
                             "dataset give an image file")
        image = nyu.read_image(path)
    else:
        image = read_rgb(path)
    return resize_nearest(image, height, width)


def predict_image(predictor: Predictor, image: np.ndarray, *, normalise: bool = True
                  ) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(class indices int64 (H,W), direct depth float32 (H,W)); None for a task the model lacks.
    ``normalise``: the params' input convention (``normalised_input``), as evaluation feeds it."""
    x = to_model_input(torch.from_numpy(np.ascontiguousarray(image))[None].to(predictor.hw.device), normalise)
    out = predictor(x)
    seg = None if out.seg is None else out.seg[0].argmax(0).cpu().numpy().astype(np.int64)
    depth = None if out.depth is None else out.depth[0, 0].float().cpu().numpy()
    return seg, depth


def _write_png(path: Path, rgb: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise XTaskError(f"{path}: could not be written")


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, arr)


def write_outputs(out_dir: Path, stem: str, seg: Optional[np.ndarray], depth: Optional[np.ndarray], *,
                  palette: np.ndarray, depth_kind: str, raw: bool) -> list[Path]:
    """Every output of one image, each file renamed into place once complete; returns their paths."""
    out_dir = Path(out_dir)
    pending: list[tuple[Path, np.ndarray, bool]] = []  # (path, array, is_png)
    if seg is not None:
        pending.append((out_dir / f"{stem}_seg.png", colourise_seg(seg, palette), True))
        if raw:
            pending.append((out_dir / f"{stem}_seg.npy", seg.astype(np.int64), False))
    if depth is not None:
        pending.append((out_dir / f"{stem}_depth.png", colourise_depth(depth, depth_kind), True))
        if raw:
            pending.append((out_dir / f"{stem}_depth.npy", depth.astype(np.float32), False))
    for path, arr, is_png in pending:
        (_write_png if is_png else _write_npy)(path, arr)
    return [p for p, _, _ in pending]


def predict_files(cfg: DatasetConfig, ckpt_path: Path, inputs: Sequence[Path], out_dir: Path, *, raw: bool = False,
                  device_override: Optional[str] = None, progress: bool = True) -> list[Path]:
    """Predict every input (files or folders) with the checkpoint (either format); returns the written paths."""
    data = cfg.data
    files = expand_inputs(inputs, data.format)
    predictor = Predictor.from_checkpoint(cfg, ckpt_path, resolve(cfg.runtime, cfg.protocol, device_override))
    palette, depth_kind = seg_palette(data.format, data.num_classes), DEPTH_KINDS[data.format]
    normalise = normalised_input(data.format, protocol_of(cfg.protocol))
    written: list[Path] = []
    for f in tqdm(files, desc="predict", unit="image", file=sys.stderr, disable=None if progress else True):
        # read before anything is written: an unreadable file leaves no output of its own
        image = read_input(f, data.format, data.height, data.width)
        seg, depth = predict_image(predictor, image, normalise=normalise)
        written += write_outputs(out_dir, f.stem, seg, depth, palette=palette, depth_kind=depth_kind, raw=raw)
    return written


USAGE = """Predict segmentation and depth for image files (or folders of them) with a checkpoint, this project's
or the original xtask_mt's model.pth (detected from its content).

Each image is preprocessed as evaluation does for --dataset (resized to the params' height x width,
ImageNet-normalised); writes <stem>_seg.png (the dataset's colours) and <stem>_depth.png (colour-mapped)
to --out, and with --raw also <stem>_seg.npy (int64 class indices, H x W) and <stem>_depth.npy
(float32 direct depth, H x W, in the dataset's unit).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
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
