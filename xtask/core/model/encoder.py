"""ResNet encoder from torchvision, exposing the five stages the decoders skip-connect to."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from xtask.common.config import ENC_LAYERS
from xtask.common.errors import XTaskError



def stage_channels(enc_layers: int) -> tuple[int, ...]:
    """Channels of stage0 (conv1) .. stage4 (layer4); bottleneck ResNets widen stages 1-4 by 4."""
    expansion = 4 if enc_layers > 34 else 1
    return (64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion)


def _weights_enum(enc_layers: int):
    return getattr(models, f"ResNet{enc_layers}_Weights").IMAGENET1K_V1


def default_pretrained_path(enc_layers: int) -> Path:
    """Where torchvision itself caches the ImageNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_weights_enum(enc_layers).url)


class ResNetEncoder(nn.Module):
    """stage0 = conv1+bn1+relu (1/2), stage1 = maxpool+layer1 (1/4), stage2-4 = layer2-4 (1/8..1/32).

    Submodules keep torchvision's names so that ImageNet state dicts load as they are.
    """

    def __init__(self, enc_layers: int):
        super().__init__()
        if enc_layers not in ENC_LAYERS:
            raise XTaskError(f"enc_layers: expected one of {list(ENC_LAYERS)}, got {enc_layers!r}")
        backbone = getattr(models, f"resnet{enc_layers}")(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (backbone.layer1, backbone.layer2,
                                                              backbone.layer3, backbone.layer4)
        self.channels = stage_channels(enc_layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = self.relu(self.bn1(self.conv1(x)))
        s1 = self.layer1(self.maxpool(s0))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        s4 = self.layer4(s3)
        return [s0, s1, s2, s3, s4]

    def last_conv(self) -> nn.Conv2d:
        """The last conv of the encoder: the shared layer GradNorm measures gradients on."""
        convs = [m for m in self.layer4.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1]

    def load_imagenet(self, enc_layers: int, path: str | os.PathLike | None = None) -> Path:
        """Load torchvision's ImageNet weights from ``path`` or the torch cache; never downloads."""
        file = Path(path) if path else default_pretrained_path(enc_layers)
        if not file.is_file():
            url = _weights_enum(enc_layers).url
            raise XTaskError(
                f"init.use_pretrain: ImageNet weights for ResNet{enc_layers} not found at {file}; "
                f"download {url} to that path (or set init.pretrained_path), or set init.use_pretrain: false")
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # a corrupt or non-tensor file: say which
            raise XTaskError(f"{file}: not a loadable ResNet state dict ({type(err).__name__}: {err})") from None
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise XTaskError(f"{file}: not ResNet{enc_layers} ImageNet weights "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return file
