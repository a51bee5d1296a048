"""Batches from a split: whole batches read at once (memory-mapped prepared arrays), then moved to
the device, normalised and (for training) augmented there as tensor ops."""
from __future__ import annotations

from typing import Iterator, NamedTuple, Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from xtask.common.prepared import STORED_IGNORE
from xtask.training.transforms import random_hflip, random_scale_crop, to_model_input
from xtask.training.distributed import World



class Batch(NamedTuple):
    image: torch.Tensor         # (N, 3, H, W) float, normalised
    seg: torch.Tensor           # (N, H, W) int64
    depth: torch.Tensor         # (N, 1, H, W) float
    depth_mask: torch.Tensor    # (N, 1, H, W) bool
    seg_mask: Optional[torch.Tensor]  # (N, 1, H, W) bool, Cityscapes only (as the original)
    total: Optional[int] = None       # images in the global batch this is a data-parallel slice of


class _BatchReader(Dataset):
    """Indexable by (sample indices, draw): a whole batch per item, so a worker reads it in one go.
    ``split``: anything with ``__len__`` and ``read(indices)`` (the prepared copy, or the raw files).

    ``draw`` (first, total) rides along to the augmentation: where this slice sits in its global batch.
    """

    def __init__(self, split):
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: tuple[list[int], tuple[int, int]]):
        indices, draw = item
        return (*(torch.from_numpy(a) for a in self.split.read(indices)), draw)


class EpochBatches(Sampler):
    """The batches of one epoch: a permutation drawn from ``generator`` (or the identity), cut in
    batches. ``skip`` drops the first batches of the next epoch only: how a run resumes mid-epoch
    without reading the batches it had already trained on.

    Across data-parallel ranks (``world``), every rank draws the same permutation. ``split_batches``
    (training): each global batch is split, each rank gets its slice, and a last batch with fewer
    images than ranks is dropped (every rank must step together). Otherwise (evaluation) whole
    batches are dealt out in turn, so every image is scored once, in the same batches as alone.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator,
                 world: World = World(), split_batches: bool = True):
        self.n, self.batch_size, self.shuffle, self.generator = n, batch_size, shuffle, generator
        self.world, self.split_batches = world, split_batches
        self.skip = 0

    def _global_batches(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and (rest >= self.world.size or not self.split_batches) else 0)

    def __len__(self) -> int:
        total = self._global_batches()
        if self.split_batches or not self.world.distributed:
            return total
        return len(range(self.world.rank, total, self.world.size))

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        skip, self.skip = self.skip, 0
        for b in range(skip, self._global_batches()):
            batch = order[b * self.batch_size:(b + 1) * self.batch_size]
            if not self.split_batches:
                if b % self.world.size == self.world.rank:
                    yield batch, (0, len(batch))
                continue
            first, count = self.world.shard(len(batch))
            yield batch[first:first + count], (first, len(batch))


def make_loader(split, batch_size: int, *, shuffle: bool, generator: Optional[torch.Generator] = None,
                workers: int = 0, world: World = World()) -> DataLoader:
    """Whole batches per item; the batch order comes from ``generator`` (its state is the data order).

    Training loaders (``shuffle``) give each rank its slice of every batch; evaluation loaders deal
    whole batches to the ranks."""
    reader = _BatchReader(split)
    batches = EpochBatches(len(reader), batch_size, shuffle=shuffle, generator=generator or torch.Generator(),
                           world=world, split_batches=shuffle)
    return DataLoader(reader, sampler=batches, batch_size=None, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())


def batch_options(cfg, depth_kind: str) -> dict:
    """How a dataset's raw batches become Batches (the keyword arguments of ``to_batch``/``iterate``)."""
    return {"ignore_index": cfg.ignore_index, "depth_kind": depth_kind, "with_seg_mask": cfg.format == "cityscapes"}


def to_batch(raw, device: torch.device, *, ignore_index: int, depth_kind: str, with_seg_mask: bool,
             augment_generator: Optional[torch.Generator] = None) -> Batch:
    *tensors, draw = raw
    image_u8, label, depth = (t.to(device, non_blocking=True) for t in tensors)
    image = to_model_input(image_u8)
    seg = label.long().masked_fill(label == STORED_IGNORE, ignore_index)
    depth = depth.float().unsqueeze(1)
    if augment_generator is not None:
        draw = tuple(int(v) for v in draw)  # a worker's collation may hand the ints back as tensors
        image, seg, depth = random_scale_crop(image, seg, depth, depth_kind=depth_kind, generator=augment_generator,
                                              draw=draw)
        image, seg, depth = random_hflip(image, seg, depth, generator=augment_generator, draw=draw)
    seg_mask = (seg != ignore_index).unsqueeze(1) if with_seg_mask else None
    return Batch(image, seg, depth, depth > 0, seg_mask, int(draw[1]))


def iterate(loader: DataLoader, device: torch.device, **kwargs) -> Iterator[Batch]:
    for raw in loader:
        yield to_batch(raw, device, **kwargs)
