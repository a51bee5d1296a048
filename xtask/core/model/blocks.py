"""Building blocks shared by the decoders and the TaskTransferNets."""
from __future__ import annotations

from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, *, batch_norm: bool = True) -> nn.Sequential:
    """3x3 conv (+ BN) + ReLU. Index 0 is the conv and index 1 the BN, as in the original's checkpoints."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def upsample2x() -> nn.Upsample:
    # align_corners=True is what the published checkpoints were trained with.
    return nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)


def init_xavier(module: nn.Module) -> None:
    """The original initialisation of the decoders and TTNets: Xavier-normal conv weights, zero conv
    biases, unit BN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
