"""Reader for NYUv2 in MTAN's preprocessed layout: <root>/<split>/{image,label,depth}/<i>.npy."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xtask.common.errors import XTaskError
from xtask.common.labels import NYU_CLASS_NAMES, NYU_IGNORE_INDEX
from xtask.data.resize import resize_nearest

KINDS = ("image", "label", "depth")
IMAGE_EXPECTED = "a float array (H,W,3) in [0,1]"
LAYOUT = "<root>/{train,val}/{image,label,depth}/<i>.npy with i = 0..N-1"


def _indices(kind_dir: Path) -> dict[int, Path]:
    if not kind_dir.is_dir():
        raise XTaskError(f"{kind_dir}: directory not found; expected the NYUv2 layout {LAYOUT}")
    found: dict[int, Path] = {}
    for p in kind_dir.iterdir():
        if p.name.startswith("."):
            continue  # editor / OS droppings are not data
        if p.suffix != ".npy" or not p.stem.isdigit() or not p.is_file():
            raise XTaskError(f"{p}: unexpected file; expected only <i>.npy files ({LAYOUT})")
        found[int(p.stem)] = p
    return found


def list_samples(root: Path, split: str) -> list[int]:
    """Indices 0..N-1 of ``split``, after checking each has its image, label and depth file."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise XTaskError(f"{split_dir}: directory not found; expected the NYUv2 layout {LAYOUT}")
    per_kind = {kind: _indices(split_dir / kind) for kind in KINDS}
    n = len(per_kind["image"])
    if n == 0:
        raise XTaskError(f"{split_dir / 'image'}: no <i>.npy files; the '{split}' split is empty")
    expected = set(range(n))
    for kind in KINDS:
        for i in sorted(expected - per_kind[kind].keys()):
            raise XTaskError(f"{split_dir / kind / f'{i}.npy'}: file not found; expected {LAYOUT}")
        for i in sorted(per_kind[kind].keys() - expected):
            raise XTaskError(f"{per_kind[kind][i]}: extra file; expected indices 0..{n - 1} ({LAYOUT})")
    return list(range(n))


def _load(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:  # np.load raises many types (ValueError, EOFError, OSError, ...)
        raise XTaskError(f"{path}: unreadable or corrupt .npy file ({type(err).__name__})") from err
    if not isinstance(arr, np.ndarray):
        raise XTaskError(f"{path}: expected a single array, got an archive")
    return arr


def _check(path: Path, ok: bool, expected: str, arr: np.ndarray) -> None:
    if not ok:
        raise XTaskError(f"{path}: expected {expected}, got shape {arr.shape} of {arr.dtype}")


def _is_image(arr: np.ndarray) -> bool:
    return arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype.kind == "f"


def read_image(path: Path) -> np.ndarray:
    """One image .npy in MTAN's format -> float32 (H,W,3) in [0, 1] at its own size (``predict``'s NYUv2 input)."""
    image = _load(Path(path))
    _check(Path(path), _is_image(image), IMAGE_EXPECTED, image)
    if not np.isfinite(image).all():
        raise XTaskError(f"{path}: contains NaN or infinite values")
    return image.astype(np.float32)


def read_sample(
    root: Path, split: str, i: int, *, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image float32 (H,W,3) in [0, 1] as MTAN stores it, label int16 (H,W) with -1 = ignore, depth float32
    (H,W) metres, 0 = invalid). The image stays float: the original feeds MTAN's values as they are."""
    paths = {kind: Path(root) / split / kind / f"{i}.npy" for kind in KINDS}
    image, label, depth = (_load(paths[kind]) for kind in KINDS)

    _check(paths["image"], _is_image(image), IMAGE_EXPECTED, image)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    _check(paths["depth"], depth.ndim == 2 and depth.dtype.kind == "f", "a float array (H,W,1) in metres", depth)
    _check(paths["label"], label.ndim == 2 and label.dtype.kind in "fiu", "a numeric array (H,W)", label)
    for kind, arr in (("label", label), ("depth", depth)):
        if arr.shape[:2] != image.shape[:2]:
            raise XTaskError(f"{paths[kind]}: size {arr.shape[:2]} differs from its image {image.shape[:2]}")
    if not np.isfinite(image).all():
        raise XTaskError(f"{paths['image']}: contains NaN or infinite values")
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise XTaskError(f"{paths['depth']}: expected finite depths >= 0 (0 = invalid)")

    values = np.unique(label)
    allowed = np.arange(NYU_IGNORE_INDEX, len(NYU_CLASS_NAMES))
    bad = values[~np.isin(values, allowed)]
    if bad.size:
        raise XTaskError(
            f"{paths['label']}: label values {bad[:5].tolist()} outside {{-1, 0..{len(NYU_CLASS_NAMES) - 1}}}"
        )
    return (
        resize_nearest(image.astype(np.float32), height, width),
        resize_nearest(label.astype(np.int16), height, width),
        resize_nearest(depth.astype(np.float32), height, width),
    )
