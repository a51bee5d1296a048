"""XTaskNet: shared ResNet encoder, a segmentation and a depth decoder, and two TaskTransferNets."""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
from torch import nn

from xtask.core.model.decoder import Decoder
from xtask.core.model.encoder import ResNetEncoder
from xtask.core.model.transfer import TaskTransferNet


class XTaskOutput(NamedTuple):
    seg: torch.Tensor                          # (N, C, H, W) logits
    depth: torch.Tensor                        # (N, 1, H, W)
    seg_transferred: Optional[torch.Tensor]    # depth -> seg TTNet applied to ``depth``
    depth_transferred: Optional[torch.Tensor]  # seg -> depth TTNet applied to ``seg``


class XTaskNet(nn.Module):
    """The original's XTaskTSNet, function for function (see ``convert_original_state_dict``).

    ``decoder_width`` and ``ttnet_width`` default to the original's 128 and 64; ``wider_ttnet``
    doubles the TTNet width as the original flag does.
    """

    def __init__(self, enc_layers: int = 34, num_classes: int = 7, batch_norm: bool = False,
                 wider_ttnet: bool = False, *, decoder_width: int = 128, ttnet_width: int = 64,
                 use_pretrain: bool = False, pretrained_path: str | os.PathLike | None = None,
                 tasks: tuple[str, ...] = ("seg", "depth"), transfer: bool = True):
        """``tasks`` and ``transfer`` give the baselines: without TTNets (mtl), one decoder (stl)."""
        super().__init__()
        if transfer and set(tasks) != {"seg", "depth"}:
            raise ValueError("TaskTransferNets need both tasks")
        self.num_classes = num_classes
        self.encoder = ResNetEncoder(enc_layers)
        if use_pretrain:
            self.encoder.load_imagenet(enc_layers, pretrained_path)
        chans = self.encoder.channels
        # built in this order whatever the method, so the same seed gives XTask the same initial weights
        self.seg_decoder = Decoder(chans, num_classes, width=decoder_width) if "seg" in tasks else None
        self.depth_decoder = Decoder(chans, 1, width=decoder_width) if "depth" in tasks else None
        self.seg_to_depth = self.depth_to_seg = None
        if transfer:
            tt_width = ttnet_width * (2 if wider_ttnet else 1)
            self.seg_to_depth = TaskTransferNet(num_classes, 1, width=tt_width, batch_norm=batch_norm,
                                                log_softmax_input=True)
            self.depth_to_seg = TaskTransferNet(1, num_classes, width=tt_width, batch_norm=batch_norm)

    def forward(self, x: torch.Tensor, with_transfer: bool = True) -> XTaskOutput:
        """``with_transfer=False`` is the original's fast inference: direct predictions only.
        What a network lacks (a decoder, the TTNets) comes back as None."""
        features = self.encoder(x)
        seg = self.seg_decoder(features) if self.seg_decoder is not None else None
        depth = self.depth_decoder(features) if self.depth_decoder is not None else None
        if not with_transfer or self.seg_to_depth is None:
            return XTaskOutput(seg, depth, None, None)
        return XTaskOutput(seg, depth, self.depth_to_seg(depth), self.seg_to_depth(seg))
