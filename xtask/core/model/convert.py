"""Checkpoints saved by the original xtask_mt code -> XTaskNet state dicts."""
from __future__ import annotations

import re
from typing import Mapping

import torch

from xtask.common.errors import XTaskError

# main_stl.py's BaseSTLNet names its one decoder ``decoder``: the XTaskTSNet name of the task's decoder
_STL_DECODER = {"seg": "decoder_segmt.", "depth": "decoder_depth."}
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


# The same renaming backwards: this project's key prefixes -> the original's ({a}: block index + 1).
_REVERSE: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^encoder\.conv1\."), "pretrained_encoder.layer0.0."),
    (re.compile(r"^encoder\.bn1\."), "pretrained_encoder.layer0.1."),
    (re.compile(r"^encoder\.layer1\."), "pretrained_encoder.layer1.1."),
    (re.compile(r"^encoder\.layer([234])\."), "pretrained_encoder.layer{0}."),
    (re.compile(r"^seg_decoder\.head\."), "decoder_segmt.conv6.0."),
    (re.compile(r"^depth_decoder\.head\."), "decoder_depth.conv6.0."),
    (re.compile(r"^seg_decoder\.blocks\.(\d)\.(\d)\."), "decoder_segmt.conv{0+}.conv{1+}."),
    (re.compile(r"^depth_decoder\.blocks\.(\d)\.(\d)\."), "decoder_depth.conv{0+}.conv{1+}."),
    (re.compile(r"^seg_to_depth\.down\.(\d)\.convs\.(\d)\."), "trans_s2d.enc{0+}.double_conv.{1}.conv."),
    (re.compile(r"^seg_to_depth\.up\.(\d)\.convs\.(\d)\."), "trans_s2d.dec{0+}.double_conv.{1}.conv."),
    (re.compile(r"^depth_to_seg\.down\.(\d)\.convs\.(\d)\."), "trans_d2s.enc{0+}.double_conv.{1}.conv."),
    (re.compile(r"^depth_to_seg\.up\.(\d)\.convs\.(\d)\."), "trans_d2s.dec{0+}.double_conv.{1}.conv."),
    (re.compile(r"^seg_to_depth\.head\."), "trans_s2d.final_conv."),
    (re.compile(r"^depth_to_seg\.head\."), "trans_d2s.final_conv."),
]


def original_key(key: str, stl_task: str | None = None) -> str:
    """This project's key -> the original's (XTaskTSNet's, or with ``stl_task`` BaseSTLNet's)."""
    for pattern, target in _REVERSE:
        m = pattern.match(key)
        if not m:
            continue
        groups = m.groups()
        name = re.sub(r"\{(\d)(\+?)\}", lambda t: str(int(groups[int(t[1])]) + (1 if t[2] else 0)), target)
        name += key[m.end():]
        if stl_task is not None and name.startswith(_STL_DECODER[stl_task]):
            name = "decoder." + name[len(_STL_DECODER[stl_task]):]
        return name
    raise XTaskError(f"{key!r} has no counterpart in the original's model")


def convert_original_state_dict(state: Mapping[str, torch.Tensor], stl_task: str | None = None
                                ) -> dict[str, torch.Tensor]:
    """Rename a state dict saved by the original code (``torch.save(model.state_dict())``): its
    XTaskTSNet's, or with ``stl_task`` ("seg" or "depth") main_stl.py's BaseSTLNet's.

    A ``module.`` prefix (the original wraps the model in DataParallel) is accepted too.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if stl_task is not None and key.startswith("decoder."):
            key = _STL_DECODER[stl_task] + key[len("decoder."):]
        out[convert_key(key)] = value
    return out
