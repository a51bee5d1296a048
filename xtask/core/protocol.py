"""The training protocol: what the original xtask_mt code did, and this project's corrections.

The published numbers came out of the original code, defects and all, so ``protocol: original`` (the
default of the paper's datasets) does what it did. ``protocol: corrected`` switches on every
correction below. Each field is one correction: False is the original's behaviour, True the fix; the
code consults these fields and nothing else, so this class is the one place that says where the two
protocols differ (the README's table and docs/protocol.md repeat it, row by row).

What is the same under both (no switch: the original's behaviour was right, or this project's was a
defect): inverse depth (d - 1) / 256**2 in float32, clipped at 0.4922 and not rounded (the published
environment: torchvision 0.8's ``to_pil_image`` kept the original's float32 arrays as float 'F' images;
today's torchvision would quantise them to 1/255 steps, which the published runs never saw); nearest-neighbour
resizing that samples each output pixel's centre (PIL's rule); decoder and TaskTransferNet conv biases
initialised to zero; Cityscapes flips before the scale-crop and NYUv2 after it; fp32 unless the params
say ``amp`` otherwise.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from xtask.common.config import CORRECTIONS as CORRECTION_NAMES
from xtask.common.config import PROTOCOLS as PROTOCOL_NAMES

@dataclass(frozen=True)
class Protocol:
    # Cityscapes scale-crop. Original: the inverse depth keeps its values when the crop is zoomed in by
    # s (only NYUv2's metric depth is divided by s). Correction: multiply it by s, the same geometric
    # change in inverse depth (the scene looks s times nearer).
    rescale_inverse_depth: bool = False
    # Loss masks. Original (Cityscapes): the seg and depth masks are computed before the scale-crop from
    # the raw maps (depth: disparity > 0, so zero-disparity pixels with inverse depth 0 count as valid),
    # resized and flipped but NOT cropped, so for scales 1.2 and 1.5 they do not cover the pixels of the
    # targets they mask. Correction: masks of the augmented targets: seg != ignore, depth > 0.
    aligned_masks: bool = False
    # NYUv2 depth losses. Original: main_cross_nyu.py and main_stl.py pass no mask, so the depth and
    # transferred-depth losses run over all pixels, missing depth (0) included. Correction: depth > 0.
    mask_missing_depth: bool = False
    # NYUv2 input. Original: MTAN's images go into the network in [0, 1]. Correction: ImageNet
    # normalisation, as for Cityscapes and as an ImageNet-pretrained encoder expects.
    normalise_nyu_input: bool = False
    # Single-task baselines. Original: main_stl.py's Adam has PyTorch's default betas (0.9, 0.999).
    # Correction: the dataset's betas, as the multi-task methods they are compared with.
    stl_dataset_betas: bool = False
    # GradNorm. Original (compute_loss_with_gradnorm): alpha 0.16, losses x 0.5, loss ratios of the
    # weighted losses, initial losses reset at every step of epoch 1, the weights' own Adam (default
    # betas, no LR schedule), only the effective weights renormalised, and the GradNorm loss's backward
    # adds second-order gradients to the model before its step. Correction: Chen et al. 2018 with
    # ``gradnorm_alpha``, first-step initial losses, weights renormalised, first-order model gradients.
    clean_gradnorm: bool = False
    # Transferred-seg KL (``tseg_loss: kl``). Original: reshapes (N, C, H, W) with view(N, H*W, C), which
    # mixes classes with pixels, and smooths with e / (C - 2). Correction: a per-pixel KL divergence.
    per_pixel_kl: bool = False
    # Best-checkpoint criterion. Original: the sum of the batches' mean losses over the number of
    # images (a short last batch weighs as much as a full one). Correction: the mean over images.
    image_weighted_val_loss: bool = False

    @property
    def name(self) -> str:
        """``original``, ``corrected``, or ``original+<correction>+...``."""
        for name, protocol in PROTOCOLS.items():
            if protocol == self:
                return name
        return "+".join(["original", *(c for c in CORRECTIONS if getattr(self, c))])


PROTOCOLS = {"original": Protocol(),
             "corrected": Protocol(**{f.name: True for f in dataclasses.fields(Protocol)})}
CORRECTIONS = tuple(f.name for f in dataclasses.fields(Protocol))
assert tuple(PROTOCOLS) == PROTOCOL_NAMES and set(CORRECTIONS) == set(CORRECTION_NAMES)


def get_protocol(name: str, corrections: Iterable[str] = ()) -> Protocol:
    """The named protocol, with ``corrections`` switched on (only ``original`` takes any)."""
    if name not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {list(PROTOCOLS)}, got {name!r}")
    return dataclasses.replace(PROTOCOLS[name], **{c: True for c in corrections})


def protocol_of(section: Any) -> Protocol:
    """The protocol of a ``protocol`` params section (``name``, ``corrections``), or of a checkpoint's saved
    config (a mapping: its ``protocol`` section, or the flat ``protocol``/``corrections`` keys of checkpoints
    from before the sections)."""
    if isinstance(section, Mapping):
        saved = section.get("protocol", "original")
        if isinstance(saved, Mapping):
            return get_protocol(saved.get("name", "original"), saved.get("corrections", ()))
        return get_protocol(saved, section.get("corrections", ()))
    return get_protocol(section.name, section.corrections)
