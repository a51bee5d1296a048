"""The task decoder: five upsampling blocks with skip connections to the encoder stages."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from xtask.core.model.blocks import conv_bn_relu, init_xavier, upsample2x


class Decoder(nn.Module):
    """Block k: cat(previous, encoder stage) -> three 3x3 conv+BN+ReLU -> 2x bilinear upsampling.

    The first block takes the deepest encoder stage alone; a 1x1 conv without bias gives the output.
    """

    def __init__(self, enc_channels: Sequence[int], out_channels: int, width: int = 128):
        super().__init__()
        deep_to_shallow = list(enc_channels)[::-1]  # stage4, stage3, ..., stage0
        in_channels = [deep_to_shallow[0]] + [width + c for c in deep_to_shallow[1:]]
        self.blocks = nn.ModuleList(
            nn.Sequential(conv_bn_relu(c, width), conv_bn_relu(width, width), conv_bn_relu(width, width), upsample2x())
            for c in in_channels
        )
        self.head = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        init_xavier(self)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features`` are the encoder stages, shallow (stage0) to deep (stage4)."""
        deep_to_shallow = list(features)[::-1]
        out = self.blocks[0](deep_to_shallow[0])
        for block, skip in zip(self.blocks[1:], deep_to_shallow[1:]):
            out = block(torch.cat((out, skip), dim=1))
        return self.head(out)
