"""The XTask model: ``XTaskNet`` and the converter for the original's checkpoints."""
from xtask.core.model.build import build_model
from xtask.core.model.convert import convert_original_state_dict
from xtask.core.model.encoder import ENC_LAYERS, default_pretrained_path
from xtask.core.model.xtask_net import XTaskNet, XTaskOutput

__all__ = ["build_model", "XTaskNet", "XTaskOutput", "convert_original_state_dict", "ENC_LAYERS", "default_pretrained_path"]
