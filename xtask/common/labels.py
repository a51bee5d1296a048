"""Class-index conventions: Cityscapes labelId -> training class, and human-readable names."""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

from xtask.common.errors import XTaskError

# Cityscapes: 250 (not 255) so that a stray uint8 255 from a broken file is not silently ignored.
CS_IGNORE_INDEX = 250
NYU_IGNORE_INDEX = -1
IGNORE_INDEX = {"cityscapes": CS_IGNORE_INDEX, "nyu": NYU_IGNORE_INDEX}  # per on-disk format

NYU_CLASS_NAMES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
    "picture", "sofa", "table", "tv", "wall", "window",
)
_CS_NUM_CATEGORIES = 7  # categoryId 1..7; 0 is "void"
_CS_NUM_TRAIN_IDS = 19


def valid_label_ids() -> set[int]:
    """Label ids of the cityscapesscripts table that can appear in an 8-bit labelIds PNG (0..33)."""
    return {lab.id for lab in _CS_LABELS if 0 <= lab.id <= 255}


def _check_cs_classes(num_classes: int) -> None:
    if num_classes not in (_CS_NUM_CATEGORIES, _CS_NUM_TRAIN_IDS):
        raise XTaskError(
            f"num_classes: expected 7 (categories) or 19 (train ids) for Cityscapes, got {num_classes}"
        )


def cityscapes_lut(num_classes: int) -> np.ndarray:
    """A uint8 table of length 256 mapping a Cityscapes labelId to a class index (250 = ignore)."""
    _check_cs_classes(num_classes)
    lut = np.full(256, CS_IGNORE_INDEX, dtype=np.uint8)
    for lab in _CS_LABELS:
        if not 0 <= lab.id <= 255:  # license plate has id -1: never stored in a labelIds PNG
            continue
        if num_classes == _CS_NUM_CATEGORIES:
            cls = lab.categoryId - 1 if 1 <= lab.categoryId <= _CS_NUM_CATEGORIES else None
        else:
            cls = lab.trainId if 0 <= lab.trainId < _CS_NUM_TRAIN_IDS else None
        if cls is not None:
            lut[lab.id] = cls
    return lut


def _cs_names(num_classes: int) -> list[str]:
    _check_cs_classes(num_classes)
    names: dict[int, str] = {}
    for lab in _CS_LABELS:
        if num_classes == _CS_NUM_CATEGORIES and 1 <= lab.categoryId <= _CS_NUM_CATEGORIES:
            names.setdefault(lab.categoryId - 1, lab.category)
        elif num_classes == _CS_NUM_TRAIN_IDS and 0 <= lab.trainId < _CS_NUM_TRAIN_IDS:
            names.setdefault(lab.trainId, lab.name)
    return [names[i] for i in range(num_classes)]


def class_names(dataset: str, num_classes: int) -> list[str]:
    """Names of the training classes, in class-index order."""
    if dataset in ("cityscapes", "synthetic"):  # the synthetic set uses Cityscapes label ids
        return _cs_names(num_classes)
    if dataset == "nyu":
        if num_classes != len(NYU_CLASS_NAMES):
            raise XTaskError(f"num_classes: expected 13 for NYUv2, got {num_classes}")
        return list(NYU_CLASS_NAMES)
    raise XTaskError(f"dataset: expected 'cityscapes', 'synthetic' or 'nyu', got {dataset!r}")
