"""The model's input and the training augmentation (the original's RandomScaleCrop and flip), as tensor
ops on whatever device the batch lives on.

Random numbers are drawn on the CPU from the caller's ``torch.Generator`` (``draw_augmentations``), then
applied on the batch's device, so a run is reproducible from its seed on CPU or GPU; ``Draw`` is one
image's draw, which the data parity check also sets by hand to the original's recorded draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALES = (1.0, 1.2, 1.5)  # RandomScaleCrop's zoom factors (MTAN's, as the original)


def to_model_input(image: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """(N,H,W,3) uint8 (0..255) or float in [0, 1] -> float32 (N,3,H,W) in [0, 1], ImageNet-normalised
    unless ``normalise`` is False (the original's NYUv2 input). Float32 is torch's default dtype; in
    ``xtask.training.float64``'s mode (the checks) the whole data path computes in float64."""
    x = image.to(torch.get_default_dtype())
    scale = 255.0 if image.dtype == torch.uint8 else 1.0
    # per-channel Python scalars: no host-to-device copy of the constants (which would sync on a GPU)
    if not normalise:
        return (x / scale if scale != 1.0 else x).permute(0, 3, 1, 2).contiguous()
    return torch.stack([(x[..., c] / scale - m) / s for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))],
                       dim=1)


@dataclass(frozen=True)
class Draw:
    """One image's augmentation: mirror it or not, and the window of ``int(H / scale)`` x ``int(W / scale)``
    pixels at row ``top``, column ``left`` that is zoomed back to H x W."""
    flip: bool
    scale: float
    top: int
    left: int


def draw_augmentations(total: int, height: int, width: int, generator: torch.Generator,
                       scales: Sequence[float] = SCALES) -> list[Draw]:
    """The draws of a whole (global) batch of ``total`` images; a data-parallel rank takes its slice, so
    the ranks together augment exactly as one process would. Uniform over the scales, the window
    positions (top in 0..H - int(H / s)) and the flip, as the original's."""
    which = torch.randint(len(scales), (total,), generator=generator).tolist()
    offsets = torch.rand(total, 2, generator=generator, dtype=torch.float64).tolist()
    flips = (torch.rand(total, generator=generator) < 0.5).tolist()
    draws = []
    for i in range(total):
        s = float(scales[which[i]])
        ch, cw = int(height / s), int(width / s)
        draws.append(Draw(bool(flips[i]), s, min(int(offsets[i][0] * (height - ch + 1)), height - ch),
                          min(int(offsets[i][1] * (width - cw + 1)), width - cw)))
    return draws


def zoom(image: torch.Tensor, seg: torch.Tensor, depth: torch.Tensor, draw: Draw
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's scale-crop: image (1,3,H,W) bilinear with align_corners (as the original), seg (1,H,W)
    and depth (1,1,H,W) nearest, so no invented classes or depths between surfaces. Depth values are
    not rescaled here (the protocol decides: ``xtask.core.batches``)."""
    _, _, h, w = image.shape
    ch, cw = int(h / draw.scale), int(w / draw.scale)
    window = (slice(None), slice(None), slice(draw.top, draw.top + ch), slice(draw.left, draw.left + cw))
    image, seg, depth = image[window], seg[:, None][window], depth[window]
    if (ch, cw) != (h, w):  # scale 1 stays an exact identity
        image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=True)
        # labels go through float for interpolate; class ids are small integers, so exactly
        seg = F.interpolate(seg.to(torch.float32), size=(h, w), mode="nearest").to(seg.dtype)
        depth = F.interpolate(depth, size=(h, w), mode="nearest")
    return image, seg[:, 0], depth


def hflip(*maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mirror every map left-right (the last dimension is the width)."""
    return tuple(m.flip(-1) for m in maps)
