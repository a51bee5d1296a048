"""The XTask model: ``XTaskNet`` and the converter for the original's checkpoints."""
from .convert import convert_original_state_dict
from .encoder import ENC_LAYERS, default_pretrained_path
from .xtask_net import XTaskNet, XTaskOutput

__all__ = ["XTaskNet", "XTaskOutput", "convert_original_state_dict", "ENC_LAYERS", "default_pretrained_path"]
