"""Data layer: raw readers (Cityscapes, NYUv2), the synthetic default dataset, prepare, augmentation."""
from xtask.data.cityscapes import RawSample
from xtask.data.labels import (
    CS_IGNORE_INDEX,
    NYU_IGNORE_INDEX,
    class_names,
    cityscapes_lut,
    valid_label_ids,
)
from xtask.data.prepare import PreparedSplit, prepare
from xtask.data.synthetic import generate
from xtask.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    random_hflip,
    random_scale_crop,
    to_model_input,
)

__all__ = [
    "CS_IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NYU_IGNORE_INDEX",
    "PreparedSplit",
    "RawSample",
    "class_names",
    "cityscapes_lut",
    "generate",
    "prepare",
    "random_hflip",
    "random_scale_crop",
    "to_model_input",
    "valid_label_ids",
]
