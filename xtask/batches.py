"""Batches from a split: whole batches read at once (memory-mapped prepared arrays), then moved to
the device, normalised and (for training) augmented there as tensor ops."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, BatchSampler, SequentialSampler

from .data.prepare import STORED_IGNORE, PreparedSplit, RawSplit
from .data.transforms import random_hflip, random_scale_crop, to_model_input

Split = Union[PreparedSplit, RawSplit]


class Batch(NamedTuple):
    image: torch.Tensor         # (N, 3, H, W) float, normalised
    seg: torch.Tensor           # (N, H, W) int64
    depth: torch.Tensor         # (N, 1, H, W) float
    depth_mask: torch.Tensor    # (N, 1, H, W) bool
    seg_mask: Optional[torch.Tensor]  # (N, 1, H, W) bool, Cityscapes only (as the original)


class _BatchReader(Dataset):
    """Indexable by a list of sample indices: a whole batch per item, so a worker reads it in one go."""

    def __init__(self, split: Split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]):
        return tuple(torch.from_numpy(a) for a in self.split.read(indices))


def open_split(cfg, split: str, root: Path = Path(".")) -> Split:
    """The split that training reads: the prepared copy, or the raw files (``data_source: raw``)."""
    if cfg.data_source == "raw":
        return RawSplit(cfg.format, root / cfg.input_path, split, num_classes=cfg.num_classes,
                        height=cfg.height, width=cfg.width)
    return PreparedSplit(cfg.prepared_dir(root), split)


def make_loader(split: Split, batch_size: int, *, shuffle: bool, seed: int, workers: int = 0) -> DataLoader:
    reader = _BatchReader(split)
    sampler = RandomSampler(reader, generator=torch.Generator().manual_seed(seed)) if shuffle \
        else SequentialSampler(reader)
    return DataLoader(reader, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def to_batch(raw, device: torch.device, *, ignore_index: int, depth_kind: str, with_seg_mask: bool,
             augment_generator: Optional[torch.Generator] = None) -> Batch:
    image_u8, label, depth = (t.to(device, non_blocking=True) for t in raw)
    image = to_model_input(image_u8)
    seg = label.long().masked_fill(label == STORED_IGNORE, ignore_index)
    depth = depth.float().unsqueeze(1)
    if augment_generator is not None:
        image, seg, depth = random_scale_crop(image, seg, depth, depth_kind=depth_kind, generator=augment_generator)
        image, seg, depth = random_hflip(image, seg, depth, generator=augment_generator)
    seg_mask = (seg != ignore_index).unsqueeze(1) if with_seg_mask else None
    return Batch(image, seg, depth, depth > 0, seg_mask)


def iterate(loader: DataLoader, device: torch.device, **kwargs) -> Iterator[Batch]:
    for raw in loader:
        yield to_batch(raw, device, **kwargs)
