"""Batched, tensor-only augmentation that runs on whatever device the batch lives on.

Random numbers are always drawn on the CPU from the caller's ``torch.Generator`` (then applied
on the batch's device), so a run is reproducible from its seed whether it trains on CPU or GPU.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from xtask.common.prepared import DEPTH_KINDS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_model_input(image_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) -> float32 (N,3,H,W), scaled to [0,1] and ImageNet-normalised."""
    x = image_u8.to(torch.float32)
    # per-channel Python scalars: no host-to-device copy of the constants (which would sync on a GPU)
    return torch.stack([(x[..., c] / 255.0 - m) / s for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))],
                       dim=1)


def _draw(n: int, draw: Optional[tuple[int, int]]) -> tuple[int, int]:
    first, total = (0, n) if draw is None else draw
    if not (0 <= first and first + n <= total):
        raise ValueError(f"draw {draw}: a slice of {n} samples does not fit in a batch of {total}")
    return first, total


def random_scale_crop(
    image: torch.Tensor,
    label: torch.Tensor,
    depth: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0, 1.2, 1.5),
    depth_kind: str,
    generator: torch.Generator,
    draw: Optional[tuple[int, int]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: zoom in by a scale s drawn from ``scales`` (crop an (H/s, W/s) window, resize back).

    image float (N,3,H,W) is resized bilinearly (align_corners=True); label int64 (N,H,W) and
    depth float (N,1,H,W) with nearest neighbour, so no invented classes or depths between surfaces.

    Zooming in by s makes the scene look s times nearer, so depth is rescaled:
    ``depth_kind="metres"`` divides by s (MTAN's convention), ``"inverse_depth"`` multiplies by s,
    which is the same geometric change expressed in inverse depth. Invalid depth (0) stays 0.

    ``draw=(first, total)``: the batch is samples ``first..first+N`` of a global batch of ``total``
    (one data-parallel rank's slice): the numbers are drawn for all ``total`` and this slice's used,
    so the ranks together augment exactly as one process would.
    """
    if depth_kind not in DEPTH_KINDS.values():
        raise ValueError(f"depth_kind must be one of {list(DEPTH_KINDS.values())}, got {depth_kind!r}")
    n, _, h, w = image.shape
    first, total = _draw(n, draw)
    which = torch.randint(len(scales), (total,), generator=generator).tolist()[first:first + n]
    offsets = torch.rand(total, 2, generator=generator, dtype=torch.float64).tolist()[first:first + n]
    images, labels, depths = [], [], []
    for i in range(n):
        s = float(scales[which[i]])
        ch, cw = int(h / s), int(w / s)
        top = min(int(offsets[i][0] * (h - ch + 1)), h - ch)
        left = min(int(offsets[i][1] * (w - cw + 1)), w - cw)
        img = image[i : i + 1, :, top : top + ch, left : left + cw]
        lab = label[i : i + 1, None, top : top + ch, left : left + cw]
        dep = depth[i : i + 1, :, top : top + ch, left : left + cw]
        if (ch, cw) != (h, w):  # skip resampling at scale 1 so it is an exact identity
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=True)
            # Labels go through float for interpolate; class ids are small ints, so exact.
            lab = F.interpolate(lab.to(torch.float32), size=(h, w), mode="nearest").to(label.dtype)
            dep = F.interpolate(dep, size=(h, w), mode="nearest")
        dep = dep / s if depth_kind == "metres" else dep * s
        images.append(img)
        labels.append(lab[:, 0])
        depths.append(dep)
    return torch.cat(images), torch.cat(labels), torch.cat(depths)


def random_hflip(
    image: torch.Tensor, label: torch.Tensor, depth: torch.Tensor, *, generator: torch.Generator,
    draw: Optional[tuple[int, int]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mirror each sample left-right with probability 0.5 (image (N,C,H,W), label (N,H,W), depth (N,1,H,W)).

    ``draw`` as in ``random_scale_crop``."""
    first, total = _draw(image.shape[0], draw)
    flip = (torch.rand(total, generator=generator) < 0.5)[first:first + image.shape[0]]
    # the decision is on the host already: flip just those samples, by index (no device sync either)
    chosen = torch.nonzero(flip).flatten().tolist()
    if not chosen:
        return image, label, depth
    idx = torch.tensor(chosen)
    if image.is_cuda:  # pinned + non-blocking: a pageable copy would wait for the GPU's queue
        idx = idx.pin_memory().to(image.device, non_blocking=True)
    image, label, depth = image.clone(), label.clone(), depth.clone()
    for t in (image, label, depth):
        t[idx] = t[idx].flip(-1)
    return image, label, depth
