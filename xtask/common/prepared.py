"""The prepared copy of a dataset, the contract between the prepare stage and the stages that read it:
per split, memory-mapped ``image.npy`` (N,H,W,3: uint8 for Cityscapes' PNGs, float32 in [0, 1] for
MTAN's NYUv2 arrays, kept as the original reads them), ``label.npy`` (uint8 N,H,W), ``depth.npy``
(float32 N,H,W: the dataset's unit, 0 or NaN where there is no measurement) and ``stems.json``;
``meta.json`` beside the splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xtask.common.errors import XTaskError

SPLITS = ("train", "val")
# What the depth maps of each on-disk format hold, and the dtype its images are stored in.
DEPTH_KINDS = {"cityscapes": "inverse_depth", "nyu": "metres"}
IMAGE_DTYPES = {"cityscapes": "uint8", "nyu": "float32"}
# Labels are stored as uint8; an ignore index that does not fit (NYUv2's -1) is stored as this value.
STORED_IGNORE = 255


def array_specs(n: int, height: int, width: int, image_dtype: str) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """name -> (dtype, shape) of one split's arrays."""
    return {"image": (np.dtype(image_dtype), (n, height, width, 3)), "label": (np.dtype(np.uint8), (n, height, width)),
            "depth": (np.dtype(np.float32), (n, height, width))}


def create_arrays(split_dir: Path, n: int, height: int, width: int, image_dtype: str) -> tuple[np.ndarray, ...]:
    """(image, label, depth) memory maps to fill in ``split_dir``; memory stays bounded whatever the
    dataset's size (full Cityscapes at 256x512 is ~1.2 GB of images)."""
    return tuple(np.lib.format.open_memmap(Path(split_dir) / f"{name}.npy", "w+", dtype, shape)
                 for name, (dtype, shape) in array_specs(n, height, width, image_dtype).items())


class PreparedSplit:
    """Read-only, memory-mapped view of one split written by the prepare stage (``xtask.data.prepare``)."""

    def __init__(self, out_dir: Path, split: str) -> None:
        out_dir = Path(out_dir)
        hint = "run the prepare stage first"
        meta_path = out_dir / "meta.json"
        try:
            self.meta: dict = json.loads(meta_path.read_text())
            n, h, w = self.meta["counts"][split], self.meta["height"], self.meta["width"]
            image_dtype = self.meta["image_dtype"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise XTaskError(f"{meta_path}: missing or invalid prepared-data metadata; {hint}") from err
        self._arrays: list[np.ndarray] = []
        for name, (dtype, shape) in array_specs(n, h, w, image_dtype).items():
            path = out_dir / split / f"{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise XTaskError(f"{path}: missing or unreadable prepared array; {hint}") from err
            if arr.dtype != dtype or arr.shape != shape:
                raise XTaskError(
                    f"{path}: expected {np.dtype(dtype)} {shape} as in meta.json, got {arr.dtype} {arr.shape}; {hint}"
                )
            self._arrays.append(arr)
        stems_path = out_dir / split / "stems.json"
        try:
            self.stems: list[str] = json.loads(stems_path.read_text())
        except (OSError, ValueError) as err:
            raise XTaskError(f"{stems_path}: missing or invalid sample list; {hint}") from err
        if len(self.stems) != n:
            raise XTaskError(f"{stems_path}: expected {n} names as in meta.json, got {len(self.stems)}; {hint}")

    def __len__(self) -> int:
        return self._arrays[0].shape[0]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (N,H,W,3), label uint8 (N,H,W), depth float32 (N,H,W)) as read-only memmaps.

        Labels hold class indices, the dataset's ignore index, or STORED_IGNORE where that does not fit.
        """
        image, label, depth = self._arrays
        return image, label, depth

    def read(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples at ``indices``, in that order, as fresh (writable) arrays: one read per array."""
        idx = np.asarray(indices)
        order = np.argsort(idx, kind="stable")
        back = np.empty_like(order)
        back[order] = np.arange(len(idx))
        # reading rows in ascending order keeps the memory-map access sequential
        return tuple(np.ascontiguousarray(arr[idx[order]][back]) for arr in self._arrays)


def to_stored(sample: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A reader's (image, label, depth) in the prepared dtypes: labels uint8, negative ignore -> STORED_IGNORE."""
    image, label, depth = sample
    return image, np.where(label < 0, STORED_IGNORE, label).astype(np.uint8), depth.astype(np.float32)
