"""The XTask model: ``XTaskNet`` and the converter for the original's checkpoints."""
from xtask.training.model.convert import convert_original_state_dict
from xtask.training.model.encoder import ENC_LAYERS, default_pretrained_path
from xtask.training.model.xtask_net import XTaskNet, XTaskOutput

__all__ = ["XTaskNet", "XTaskOutput", "convert_original_state_dict", "ENC_LAYERS", "default_pretrained_path"]
