"""Batches from a prepared split: whole batches read from the memory-mapped arrays, then moved to
the device, normalised and (for training) augmented there as tensor ops."""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, BatchSampler, SequentialSampler

from .data.prepare import PreparedSplit
from .data.transforms import random_hflip, random_scale_crop, to_model_input


class Batch(NamedTuple):
    image: torch.Tensor         # (N, 3, H, W) float, normalised
    seg: torch.Tensor           # (N, H, W) int64
    depth: torch.Tensor         # (N, 1, H, W) float
    depth_mask: torch.Tensor    # (N, 1, H, W) bool
    seg_mask: Optional[torch.Tensor]  # (N, 1, H, W) bool, Cityscapes only (as the original)


class _BatchReader(Dataset):
    """Indexable by a list of sample indices: one fancy-indexed read per array per batch."""

    def __init__(self, split: PreparedSplit):
        self.image, self.label, self.depth = split.arrays()

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, indices: list[int]):
        idx = np.sort(np.asarray(indices))  # sorted reads are sequential on the memory map
        order = np.argsort(np.argsort(np.asarray(indices)))
        return (torch.from_numpy(np.ascontiguousarray(self.image[idx][order])),
                torch.from_numpy(np.ascontiguousarray(self.label[idx][order])),
                torch.from_numpy(np.ascontiguousarray(self.depth[idx][order])))


def make_loader(split: PreparedSplit, batch_size: int, *, shuffle: bool, seed: int, workers: int = 0) -> DataLoader:
    reader = _BatchReader(split)
    sampler = RandomSampler(reader, generator=torch.Generator().manual_seed(seed)) if shuffle \
        else SequentialSampler(reader)
    return DataLoader(reader, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def to_batch(raw, device: torch.device, *, ignore_index: int, depth_kind: str, with_seg_mask: bool,
             augment_generator: Optional[torch.Generator] = None) -> Batch:
    image_u8, label, depth = (t.to(device, non_blocking=True) for t in raw)
    image = to_model_input(image_u8)
    seg = label.long()
    depth = depth.float().unsqueeze(1)
    if augment_generator is not None:
        image, seg, depth = random_scale_crop(image, seg, depth, depth_kind=depth_kind, generator=augment_generator)
        image, seg, depth = random_hflip(image, seg, depth, generator=augment_generator)
    seg_mask = (seg != ignore_index).unsqueeze(1) if with_seg_mask else None
    return Batch(image, seg, depth, depth > 0, seg_mask)


def iterate(loader: DataLoader, device: torch.device, **kwargs) -> Iterator[Batch]:
    for raw in loader:
        yield to_batch(raw, device, **kwargs)
