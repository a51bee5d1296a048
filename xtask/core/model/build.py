"""A dataset config's network for one method."""
from __future__ import annotations

from xtask.common.config import DatasetConfig
from xtask.common.methods import METHODS, Method
from xtask.core.model.xtask_net import XTaskNet


def build_model(cfg: DatasetConfig, method: Method = METHODS["xtask"], *, pretrained: bool | None = None
                ) -> XTaskNet:
    return XTaskNet(cfg.enc_layers, cfg.num_classes, cfg.batch_norm, cfg.wider_ttnet,
                    decoder_width=cfg.decoder_width, ttnet_width=cfg.ttnet_width,
                    use_pretrain=cfg.use_pretrain if pretrained is None else pretrained,
                    pretrained_path=cfg.pretrained_path, tasks=method.tasks, transfer=method.transfer)
