"""Segmentation palettes and depth colour maps, shared by the evaluation figure and ``predict``.

Segmentation: Cityscapes-format datasets (cityscapes, synthetic) use cityscapesScripts' label colours
(19 classes: the colour of each train id; 7 classes: the colour of the first label of each category,
e.g. road for "flat"); NYUv2's 13 classes use the fixed palette below. Ignored pixels are black.

Depth: a matplotlib colour map over a value range, oriented so that near is bright for both depth
kinds (magma on Cityscapes' inverse depth, reversed magma on NYUv2's metres); invalid pixels are white.
"""
from __future__ import annotations

from typing import Optional

import matplotlib
import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from xtask.common.errors import XTaskError
from xtask.common.labels import NYU_CLASS_NAMES, class_names

# Fixed (not drawn from a matplotlib map) so that the colours never move with a library version.
NYU_PALETTE = (
    (31, 119, 180), (174, 199, 232), (255, 127, 14), (255, 187, 120), (44, 160, 44), (152, 223, 138),
    (214, 39, 40), (255, 152, 150), (148, 103, 189), (197, 176, 213), (140, 86, 75), (227, 119, 194),
    (23, 190, 207),
)
IGNORE_COLOUR = (0, 0, 0)
INVALID_DEPTH_COLOUR = (255, 255, 255)
DEPTH_MAPS = {"inverse_depth": "magma", "metres": "magma_r"}


def seg_palette(fmt: str, num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB, in class-index order, for a dataset format ('cityscapes' or 'nyu')."""
    class_names(fmt, num_classes)  # validates the pair with the usual one-line error
    if fmt == "nyu":
        assert len(NYU_PALETTE) == len(NYU_CLASS_NAMES)
        return np.array(NYU_PALETTE, dtype=np.uint8)
    colours: dict[int, tuple[int, int, int]] = {}
    for lab in _CS_LABELS:
        if num_classes == 19 and 0 <= lab.trainId < 19:
            colours.setdefault(lab.trainId, lab.color)
        elif num_classes == 7 and 1 <= lab.categoryId <= 7 and lab.id >= 0:
            colours.setdefault(lab.categoryId - 1, lab.color)
    return np.array([colours[i] for i in range(num_classes)], dtype=np.uint8)


def colourise_seg(seg: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class indices (H,W) -> (H,W,3) uint8; anything outside 0..C-1 (the ignore index) is black."""
    seg = np.asarray(seg)
    valid = (seg >= 0) & (seg < len(palette))
    out = np.empty(seg.shape + (3,), dtype=np.uint8)
    out[...] = IGNORE_COLOUR
    out[valid] = palette[seg[valid]]
    return out


def depth_range(depth: np.ndarray, valid: Optional[np.ndarray] = None) -> tuple[float, float]:
    """(low, high) of the valid values: the range that maps onto the colour map's ends."""
    values = np.asarray(depth, dtype=np.float64)
    values = values[np.isfinite(values) & (True if valid is None else valid)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    return (low, high) if high > low else (low, low + 1e-6)


def colourise_depth(depth: np.ndarray, depth_kind: str, *, valid: Optional[np.ndarray] = None,
                    value_range: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Depth (H,W) in the dataset's unit -> (H,W,3) uint8; ``valid`` False (or non-finite) -> white.

    ``value_range`` defaults to this map's own valid range; pass a shared one to compare maps.
    """
    if depth_kind not in DEPTH_MAPS:
        raise XTaskError(f"depth_kind: expected one of {sorted(DEPTH_MAPS)}, got {depth_kind!r}")
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (True if valid is None else np.asarray(valid, dtype=bool))
    low, high = value_range or depth_range(depth, ok)
    scaled = np.clip((np.where(ok, depth, low) - low) / (high - low), 0.0, 1.0)
    rgba = matplotlib.colormaps[DEPTH_MAPS[depth_kind]](scaled, bytes=True)
    out = np.ascontiguousarray(rgba[..., :3])
    out[~ok] = INVALID_DEPTH_COLOUR
    return out
