"""Batches from a split: whole batches read at once (memory-mapped prepared arrays), then moved to
the device, normalised and (for training) augmented there as tensor ops, with the loss masks the
protocol (``xtask.core.protocol``) says."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from xtask.common.config import DataConfig
from xtask.common.prepared import STORED_IGNORE
from xtask.core.distributed import World
from xtask.core.protocol import Protocol
from xtask.core.transforms import Draw, draw_augmentations, hflip, to_model_input, zoom


class Batch(NamedTuple):
    image: torch.Tensor         # (N, 3, H, W) float, the model's input
    seg: torch.Tensor           # (N, H, W) int64
    depth: torch.Tensor         # (N, 1, H, W) float, 0 where not measured
    depth_mask: torch.Tensor    # (N, 1, H, W) bool: the pixels the depth losses see
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


@dataclass(frozen=True)
class BatchSpec:
    """How one dataset's stored arrays become a Batch under its protocol (``batch_spec``)."""
    ignore_index: int
    normalise_input: bool     # ImageNet normalisation (the original's NYUv2 input is [0, 1])
    flip_first: bool          # Cityscapes flips before the scale-crop, NYUv2 after it (as the original)
    rescale_depth: str        # under a zoom by s: "divide" (metres), "multiply" (inverse depth) or "none"
    seg_mask: bool            # a seg mask for the transferred-seg loss (Cityscapes; the original's NYUv2 has none)
    depth_mask: str           # "valid" (depth > 0), "measured" (finite: the original's disparity > 0) or "all"
    masks_after_crop: bool    # masks of the augmented targets, or (the original's) of the maps before the crop


def normalised_input(fmt: str, protocol: Protocol) -> bool:
    """Whether the model's input is ImageNet-normalised: always for Cityscapes; for NYUv2 the original
    fed MTAN's [0, 1] images as they are (``Protocol.normalise_nyu_input``)."""
    return fmt != "nyu" or protocol.normalise_nyu_input


def batch_spec(data: DataConfig, protocol: Protocol) -> BatchSpec:
    if data.format == "cityscapes":
        return BatchSpec(data.ignore_index, normalise_input=True, flip_first=True,
                         rescale_depth="multiply" if protocol.rescale_inverse_depth else "none", seg_mask=True,
                         depth_mask="valid" if protocol.aligned_masks else "measured",
                         masks_after_crop=protocol.aligned_masks)
    return BatchSpec(data.ignore_index, normalise_input=normalised_input(data.format, protocol), flip_first=False,
                     rescale_depth="divide", seg_mask=False,
                     depth_mask="valid" if protocol.mask_missing_depth else "all", masks_after_crop=True)


def loss_masks(spec: BatchSpec, seg: torch.Tensor, depth: torch.Tensor) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """(seg mask or None, depth mask) of targets seg (N,H,W) and depth (N,1,H,W, NaN where not measured)."""
    seg_mask = (seg != spec.ignore_index).unsqueeze(1) if spec.seg_mask else None
    if spec.depth_mask == "valid":
        depth_mask = depth > 0  # NaN (no measurement) compares False
    elif spec.depth_mask == "measured":
        depth_mask = ~depth.isnan()
    else:
        depth_mask = torch.ones_like(depth, dtype=torch.bool)
    return seg_mask, depth_mask


def _augment(spec: BatchSpec, image, seg, depth, draw: Draw):
    """One image (batch dimension 1): flip and scale-crop in the dataset's order; returns the maps and
    the masks (of the augmented targets, or as the original, of the maps before the crop)."""
    if spec.flip_first and draw.flip:
        image, seg, depth = hflip(image, seg, depth)
    before = None if spec.masks_after_crop else loss_masks(spec, seg, depth)
    image, seg, depth = zoom(image, seg, depth, draw)
    if spec.rescale_depth == "divide":
        depth = depth / draw.scale
    elif spec.rescale_depth == "multiply":
        depth = depth * draw.scale
    if not spec.flip_first and draw.flip:
        image, seg, depth = hflip(image, seg, depth)
        before = None if before is None else tuple(m if m is None else m.flip(-1) for m in before)
    return image, seg, depth, before if before is not None else loss_masks(spec, seg, depth)


def to_batch(raw, device: torch.device, spec: BatchSpec, draws: Optional[Sequence[Draw]] = None) -> Batch:
    """A Batch from one loader item; augmented with ``draws`` (one per image) when given. Depth that was
    never measured (NaN in the prepared copy) becomes 0 once the masks are taken."""
    *tensors, draw = raw
    image_raw, label, depth = (t.to(device, non_blocking=True) for t in tensors)
    image = to_model_input(image_raw, spec.normalise_input)
    seg = label.long().masked_fill(label == STORED_IGNORE, spec.ignore_index)
    depth = depth.to(torch.get_default_dtype()).unsqueeze(1)  # float32, or float64 in the checks' mode
    if draws is None:
        seg_mask, depth_mask = loss_masks(spec, seg, depth)
    else:
        parts = [_augment(spec, image[i:i + 1], seg[i:i + 1], depth[i:i + 1], d) for i, d in enumerate(draws)]
        image, seg, depth = (torch.cat([p[k] for p in parts]) for k in range(3))
        seg_mask = None if not spec.seg_mask else torch.cat([p[3][0] for p in parts])
        depth_mask = torch.cat([p[3][1] for p in parts])
    return Batch(image, seg, torch.nan_to_num(depth, nan=0.0), depth_mask, seg_mask, int(draw[1]))


def iterate(loader: DataLoader, device: torch.device, spec: BatchSpec,
            augment_generator: Optional[torch.Generator] = None) -> Iterator[Batch]:
    """The loader's batches; augmented with draws from ``augment_generator`` when given."""
    for raw in loader:
        draws = None
        if augment_generator is not None:
            first, total = (int(v) for v in raw[-1])  # a worker's collation may hand the ints back as tensors
            _, h, w = raw[1].shape
            draws = draw_augmentations(total, h, w, augment_generator)[first:first + raw[1].shape[0]]
        yield to_batch(raw, device, spec, draws)
