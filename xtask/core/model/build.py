"""A dataset config's network for one method."""
from __future__ import annotations

from typing import Optional

from xtask.common.config import InitConfig, ModelConfig
from xtask.common.methods import METHODS, Method
from xtask.core.model.xtask_net import XTaskNet


def build_model(model: ModelConfig, num_classes: int, method: Method = METHODS["xtask"],
                init: Optional[InitConfig] = None) -> XTaskNet:
    """``method``'s network of the ``model`` section's shape; its encoder starts from ImageNet weights only
    where ``init`` says so (training a new model: None everywhere else, where weights are loaded anyway)."""
    init = init or InitConfig()
    return XTaskNet(model.enc_layers, num_classes, model.batch_norm, model.wider_ttnet,
                    decoder_width=model.decoder_width, ttnet_width=model.ttnet_width,
                    use_pretrain=init.use_pretrain, pretrained_path=init.pretrained_path, tasks=method.tasks,
                    transfer=method.transfer)
