"""Checkpoints saved by the original xtask_mt code -> XTaskNet state dicts."""
from __future__ import annotations

import re
from typing import Mapping

import torch

from xtask.common.errors import XTaskError

# Each rule rewrites a prefix of the original's key names; the rest of the key is kept.
_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^pretrained_encoder\.layer0\.0\."), "encoder.conv1."),
    (re.compile(r"^pretrained_encoder\.layer0\.1\."), "encoder.bn1."),
    (re.compile(r"^pretrained_encoder\.layer1\.1\."), "encoder.layer1."),
    (re.compile(r"^pretrained_encoder\.layer([234])\."), r"encoder.layer\1."),
    (re.compile(r"^decoder_segmt\.conv6\.0\."), "seg_decoder.head."),
    (re.compile(r"^decoder_depth\.conv6\.0\."), "depth_decoder.head."),
    (re.compile(r"^decoder_segmt\.conv([1-5])\.conv([1-3])\."), "seg_decoder.blocks.{a}.{b}."),
    (re.compile(r"^decoder_depth\.conv([1-5])\.conv([1-3])\."), "depth_decoder.blocks.{a}.{b}."),
    (re.compile(r"^trans_s2d\.enc([1-3])\.double_conv\.([01])\.conv\."), "seg_to_depth.down.{a}.convs.{b0}."),
    (re.compile(r"^trans_s2d\.dec([1-3])\.double_conv\.([01])\.conv\."), "seg_to_depth.up.{a}.convs.{b0}."),
    (re.compile(r"^trans_d2s\.enc([1-3])\.double_conv\.([01])\.conv\."), "depth_to_seg.down.{a}.convs.{b0}."),
    (re.compile(r"^trans_d2s\.dec([1-3])\.double_conv\.([01])\.conv\."), "depth_to_seg.up.{a}.convs.{b0}."),
    (re.compile(r"^trans_s2d\.final_conv\."), "seg_to_depth.head."),
    (re.compile(r"^trans_d2s\.final_conv\."), "depth_to_seg.head."),
]


def convert_key(key: str) -> str:
    for pattern, target in _RULES:
        m = pattern.match(key)
        if not m:
            continue
        groups = m.groups()
        if "{" in target:
            # originals count blocks from 1; ModuleList/Sequential indices count from 0
            target = target.format(a=int(groups[0]) - 1, b=int(groups[1]) - 1 if len(groups) > 1 else 0,
                                   b0=int(groups[1]) if len(groups) > 1 else 0)
            return target + key[m.end():]
        return pattern.sub(target, key[:m.end()]) + key[m.end():]
    raise XTaskError(f"checkpoint key {key!r} is not a key of the original XTaskTSNet")


def convert_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict saved by the original code (``torch.save(model.state_dict())``).

    A ``module.`` prefix (the original wraps the model in DataParallel) is accepted too.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        out[convert_key(key)] = value
    return out
