"""The prepare stage: validate a raw dataset once and store it as fixed-size numpy arrays."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path
from xtask.common.labels import IGNORE_INDEX, NYU_CLASS_NAMES, cityscapes_lut
from xtask.common.prepared import DEPTH_KINDS, IMAGE_DTYPES, SPLITS, create_arrays, to_stored
from xtask.data import cityscapes, nyu

FULL_SIZES = {"cityscapes": {"train": 2975, "val": 500}, "nyu": {"train": 795, "val": 654}}

Reader = Callable[[Any], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _readers(kind: str, raw_root: Path, num_classes: int, height: int, width: int
             ) -> dict[str, tuple[list[str], list[Any], Reader]]:
    """Per split: (sample names, sample handles, handle -> arrays). Lists everything before reading."""
    if kind == "cityscapes":
        lut = cityscapes_lut(num_classes)
        out = {}
        for split in SPLITS:
            samples = cityscapes.list_samples(raw_root, split)
            out[split] = ([s.stem for s in samples], samples,
                          lambda s: cityscapes.read_sample(s, lut=lut, height=height, width=width))
        return out
    if kind == "nyu":
        if num_classes != len(NYU_CLASS_NAMES):
            raise XTaskError(f"num_classes: expected {len(NYU_CLASS_NAMES)} for NYUv2, got {num_classes}")
        out = {}
        for split in SPLITS:
            idx = nyu.list_samples(raw_root, split)
            out[split] = ([str(i) for i in idx], idx,
                          lambda i, split=split: nyu.read_sample(raw_root, split, i, height=height, width=width))
        return out
    raise XTaskError(f"kind: expected 'cityscapes' or 'nyu', got {kind!r}")


def _check_counts(kind: str, raw_root: Path, counts: dict[str, int], expect_full_size: bool) -> str | None:
    """Refuse a subset when the full dataset is expected; otherwise return the subset notice (or None)."""
    full = FULL_SIZES[kind]
    if counts == full:
        return None
    found = ", ".join(f"{s} {counts[s]} (full {full[s]})" for s in SPLITS)
    if expect_full_size:
        raise XTaskError(f"{raw_root}: found {found} samples; expected the full {kind} dataset")
    return f"prepare: {raw_root} is a subset of {kind}: {found}"


def prepare(kind: str, raw_root: Path, out_dir: Path, *, num_classes: int, height: int, width: int,
            expect_full_size: bool, progress: bool = True) -> dict:
    """Read, validate and resize every train/val sample; write arrays + meta.json atomically to out_dir."""
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    readers = _readers(kind, raw_root, num_classes, height, width)
    counts = {split: len(readers[split][1]) for split in SPLITS}
    # printed only once the copy is written: a failing prepare says one line, its error
    notice = _check_counts(kind, raw_root, counts, expect_full_size)

    depth_sum, depth_n = 0.0, 0
    with atomic_path(out_dir) as tmp:
        for split in SPLITS:
            names, handles, read = readers[split]
            d = tmp / split
            d.mkdir(parents=True)
            n = len(handles)
            image, label, depth = create_arrays(d, n, height, width, IMAGE_DTYPES[kind])
            bar = tqdm(handles, desc=f"prepare {split}", disable=None if progress else True, leave=False)
            for i, h in enumerate(bar):
                image[i], label[i], depth[i] = to_stored(read(h))
                if split == "train":
                    valid = depth[i][depth[i] > 0]
                    depth_sum += float(valid.sum(dtype=np.float64))
                    depth_n += int(valid.size)
            for arr in (image, label, depth):
                arr.flush()
            del image, label, depth
            (d / "stems.json").write_text(json.dumps(names) + "\n")
        if depth_n == 0:
            raise XTaskError(f"{raw_root}: the train split has no valid depth pixels")
        meta = {
            "kind": kind,
            "num_classes": num_classes,
            "ignore_index": IGNORE_INDEX[kind],
            "depth_kind": DEPTH_KINDS[kind],
            "image_dtype": IMAGE_DTYPES[kind],
            "height": height,
            "width": width,
            "counts": counts,
            "train_depth_mean": depth_sum / depth_n,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if notice:
        print(notice, file=sys.stderr)
    return meta


class RawSplit:
    """The same interface as PreparedSplit, decoding the raw files for every read.

    This is the original's data path (a PNG triple decoded per sample per epoch): slow, kept to show
    that the prepared path gives the same batches.
    """

    def __init__(self, kind: str, raw_root: Path, split: str, *, num_classes: int, height: int, width: int):
        self.names, self._handles, self._read = _readers(kind, Path(raw_root), num_classes, height, width)[split]
        self.meta = {"kind": kind, "num_classes": num_classes, "ignore_index": IGNORE_INDEX[kind],
                     "depth_kind": DEPTH_KINDS[kind], "image_dtype": IMAGE_DTYPES[kind], "height": height,
                     "width": width}

    def __len__(self) -> int:
        return len(self._handles)

    def read(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        samples = [to_stored(self._read(self._handles[i])) for i in indices]
        return tuple(np.stack(parts) for parts in zip(*samples))
