"""TaskTransferNet: a small U-Net that maps one task's prediction to the other task."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xtask.core.model.blocks import conv_bn_relu, init_xavier, upsample2x


def _double_conv(in_ch: int, out_ch: int, batch_norm: bool) -> nn.Module:
    return nn.Sequential(conv_bn_relu(in_ch, out_ch, batch_norm=batch_norm),
                         conv_bn_relu(out_ch, out_ch, batch_norm=batch_norm))


class _Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool):
        super().__init__()
        self.convs = _double_conv(in_ch, out_ch, batch_norm)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.convs(x))


class _Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool):
        super().__init__()
        self.up = upsample2x()
        self.convs = _double_conv(in_ch, out_ch, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(self.up(x))


class TaskTransferNet(nn.Module):
    """Three down blocks, three up blocks with skip connections, a 1x1 output conv.

    ``log_softmax_input``: the seg->depth net reads log-probabilities rather than raw logits, so the
    transferred depth does not depend on the logits' arbitrary offset.
    """

    def __init__(self, in_channels: int, out_channels: int, *, width: int = 64, batch_norm: bool = False,
                 log_softmax_input: bool = False):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.log_softmax_input = log_softmax_input
        self.down = nn.ModuleList([_Down(in_channels, w1, batch_norm), _Down(w1, w2, batch_norm),
                                   _Down(w2, w3, batch_norm)])
        self.up = nn.ModuleList([_Up(w3, w2, batch_norm), _Up(2 * w2, w1, batch_norm), _Up(2 * w1, w1, batch_norm)])
        self.head = nn.Conv2d(w1, out_channels, kernel_size=1, bias=False)
        init_xavier(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.log_softmax_input:
            x = F.log_softmax(x, dim=1)
        e1 = self.down[0](x)
        e2 = self.down[1](e1)
        e3 = self.down[2](e2)
        out = self.up[0](e3)
        out = self.up[1](torch.cat((out, e2), dim=1))
        out = self.up[2](torch.cat((out, e1), dim=1))
        return self.head(out)
