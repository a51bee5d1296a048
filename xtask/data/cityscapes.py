"""Reader for the raw Cityscapes layout (leftImg8bit / gtFine labelIds / disparity)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from xtask.common.errors import XTaskError
from xtask.common.labels import valid_label_ids
from xtask.data.resize import resize_nearest

IMAGE_DIR, IMAGE_SUFFIX = "leftImg8bit", "_leftImg8bit.png"
LABEL_DIR, LABEL_SUFFIX = "gtFine", "_gtFine_labelIds.png"
DISP_DIR, DISP_SUFFIX = "disparity", "_disparity.png"
LAYOUT = (
    f"<root>/{IMAGE_DIR}/<split>/<city>/<stem>{IMAGE_SUFFIX}, "
    f"<root>/{LABEL_DIR}/<split>/<city>/<stem>{LABEL_SUFFIX}, "
    f"<root>/{DISP_DIR}/<split>/<city>/<stem>{DISP_SUFFIX}"
)
# Upper clip of the inverse depth, as in the original reproduction (0.4922 ~ (32257 - 1) / 256**2).
MAX_INVERSE_DEPTH = 0.4922


@dataclass(frozen=True)
class RawSample:
    stem: str
    image: Path
    label: Path
    disparity: Path


def _split_dir(root: Path, sub: str, split: str) -> Path:
    d = root / sub / split
    if not d.is_dir():
        raise XTaskError(f"{d}: directory not found; expected the Cityscapes layout {LAYOUT}")
    return d


def _index(split_dir: Path, suffix: str) -> dict[tuple[str, str], Path]:
    """(city, stem) -> file, for the files of one kind; other files (e.g. gtFine colour) are ignored."""
    return {
        (p.parent.name, p.name[: -len(suffix)]): p
        for p in split_dir.glob(f"*/*{suffix}")
        if p.is_file()
    }


def list_samples(root: Path, split: str) -> list[RawSample]:
    """All samples of ``split``, sorted by (city, stem), after checking every image has its partners."""
    root = Path(root)
    if not root.is_dir():
        raise XTaskError(f"{root}: dataset root not found; expected the Cityscapes layout {LAYOUT}")
    dirs = {sub: _split_dir(root, sub, split) for sub in (IMAGE_DIR, LABEL_DIR, DISP_DIR)}
    images = _index(dirs[IMAGE_DIR], IMAGE_SUFFIX)
    labels = _index(dirs[LABEL_DIR], LABEL_SUFFIX)
    disps = _index(dirs[DISP_DIR], DISP_SUFFIX)
    if not images:
        raise XTaskError(f"{dirs[IMAGE_DIR]}: no *{IMAGE_SUFFIX} files; the '{split}' split is empty")
    for sub, suffix, found in ((LABEL_DIR, LABEL_SUFFIX, labels), (DISP_DIR, DISP_SUFFIX, disps)):
        for key in sorted(images.keys() - found.keys()):
            missing = dirs[sub] / key[0] / f"{key[1]}{suffix}"
            raise XTaskError(f"{missing}: file not found; every image needs its {sub} file")
        for key in sorted(found.keys() - images.keys()):
            raise XTaskError(f"{found[key]}: has no matching image {key[1]}{IMAGE_SUFFIX}; remove it or add the image")
    return [
        RawSample(stem=key[1], image=images[key], label=labels[key], disparity=disps[key])
        for key in sorted(images)
    ]


def _imdecode_quiet(data: np.ndarray) -> np.ndarray | None:
    # OpenCV logs its own "[ WARN ...] PNG input buffer is incomplete" on stderr for a truncated file;
    # silence it while decoding, so that the one-line error below is all the user sees.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)


def _decode(path: Path) -> np.ndarray:
    # imdecode on the bytes (not imread) so a truncated file is reported rather than half-read,
    # and IMREAD_UNCHANGED so bit depth and channel count can be validated.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise XTaskError(f"{path}: cannot read file ({err.strerror})") from err
    arr = _imdecode_quiet(data) if data.size else None
    if arr is None:
        raise XTaskError(f"{path}: unreadable, truncated or corrupt PNG")
    return arr


def disparity_to_inverse_depth(p: np.ndarray) -> np.ndarray:
    """Cityscapes uint16 disparity PNG values -> float32 inverse depth (p - 1) / 256**2, clipped at 0.4922,
    computed in float32 and not rounded, as the original computes it; NaN where there is no measurement
    (p == 0). p == 1 gives 0, zero disparity: the original's loss mask (p > 0) counts those pixels as
    valid while its metrics (target > 0) skip them, so the prepared copy keeps the two apart."""
    p = p.astype(np.float32)
    inv = np.where(p > 0, (p - 1) / np.float32(256**2), np.float32(np.nan))
    return np.minimum(inv, np.float32(MAX_INVERSE_DEPTH))  # NaN stays NaN


def read_sample(
    s: RawSample, *, lut: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image uint8 (H,W,3) RGB, label uint8 (H,W) class indices / 250, inverse depth float32 (H,W), NaN
    where the disparity map has no measurement)."""
    image = _decode(s.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise XTaskError(f"{s.image}: expected an 8-bit 3-channel colour PNG, got {_describe(image)}")
    label = _decode(s.label)
    if label.ndim != 2 or label.dtype != np.uint8:
        raise XTaskError(f"{s.label}: expected an 8-bit single-channel labelIds PNG, got {_describe(label)}")
    disp = _decode(s.disparity)
    if disp.ndim != 2 or disp.dtype != np.uint16:
        raise XTaskError(f"{s.disparity}: expected a 16-bit PNG (single channel), got {_describe(disp)}")
    if label.shape[:2] == disp.shape[:2] != image.shape[:2]:
        # label and disparity agree: the image is the odd one out
        raise XTaskError(
            f"{s.image}: size {image.shape[1]}x{image.shape[0]} differs from its label and disparity "
            f"{label.shape[1]}x{label.shape[0]}"
        )
    for path, arr in ((s.label, label), (s.disparity, disp)):
        if arr.shape[:2] != image.shape[:2]:
            raise XTaskError(
                f"{path}: size {arr.shape[1]}x{arr.shape[0]} differs from its image "
                f"{image.shape[1]}x{image.shape[0]}"
            )
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = sorted(set(present.tolist()) - valid_label_ids())
    if bad:
        raise XTaskError(f"{s.label}: label ids {bad[:5]} are not Cityscapes label ids (expected 0..33)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return (
        resize_nearest(image, height, width),
        resize_nearest(lut[label], height, width),
        resize_nearest(disparity_to_inverse_depth(disp), height, width),
    )


def _describe(arr: np.ndarray) -> str:
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    return f"{channels} channel(s) of {arr.dtype}"
