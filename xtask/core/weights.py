"""Trained weights from either kind of checkpoint, checked against the params, as a ready model.

Two formats are recognised from the file's content (never its name):

- this project's: a dict with ``model`` (XTaskNet state dict), ``config`` (the training params),
  ``seed`` and ``epoch`` (``best.pt`` / ``last.pt`` of the train stage);
- the original xtask_mt code's ``model.pth``: the flat ``state_dict()`` of its XTaskTSNet (keys such
  as ``pretrained_encoder.layer0.0.weight``), maybe ``module.``-prefixed (DataParallel) or wrapped
  in a dict under ``state_dict`` / ``model_state_dict`` / ``model``. It has no params, so its
  architecture is read from the tensor shapes and must equal the dataset section's.

Either way the file is read with ``weights_only=True`` (``checkpoint.load``): tensors and plain values only.

Inputs: callers feed images as the params' protocol says (``normalised_input``: ImageNet-normalised,
or for NYUv2 under ``protocol: original`` in [0, 1] as MTAN stores them). A network trained with the
other convention (an original NYUv2 ``model.pth`` saw [0, 1] images; a checkpoint of this project
records its protocol) is wrapped in ``InputConvention``, which converts the input before its network.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Optional

import torch

from xtask.common.config import DatasetConfig, ModelConfig
from xtask.common.errors import XTaskError
from xtask.common.methods import METHODS, Method
from xtask.core import checkpoint
from xtask.core.batches import normalised_input
from xtask.core.model import XTaskNet, XTaskOutput, convert_original_state_dict
from xtask.core.model import build_model
from xtask.core.protocol import protocol_of
from xtask.core.transforms import IMAGENET_MEAN, IMAGENET_STD

ORIGINAL_PREFIXES = ("pretrained_encoder.", "decoder_segmt.", "decoder_depth.", "trans_s2d.", "trans_d2s.")
ORIGINAL_WRAPPERS = ("state_dict", "model_state_dict", "model")
# torchvision ResNets: blocks per stage, and whether they are bottlenecks (conv3)
RESNETS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
           ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152}
EXPECTED = ("an xtask checkpoint (a dict with 'model' and 'config') or the original xtask_mt's model.pth "
            "(a state dict with keys such as pretrained_encoder.layer0.0.weight)")


class Weights(NamedTuple):
    state_dict: dict[str, torch.Tensor]  # XTaskNet key names
    source: str                          # "xtask" or "original"
    config: Optional[dict[str, Any]]     # the training params (this project's format) or None
    seed: Optional[int]
    epoch: Optional[int]
    method: str = "xtask"                # the original's model.pth is always an XTask network
    run_config: Optional[dict[str, Any]] = None  # what decided the run, seed aside (resume.run_config); None:
    # the original's model.pth, or a best.pt written before checkpoints carried it


def _is_original(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return False
    keys = [k[len("module."):] if isinstance(k, str) and k.startswith("module.") else k for k in obj]
    return all(isinstance(k, str) for k in keys) and any(k.startswith(ORIGINAL_PREFIXES) for k in keys)


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:3]
        return f"a dict with keys {keys}{' ...' if len(obj) > 3 else ''}"
    return f"a {type(obj).__name__}"


def original_state(payload: Any) -> Optional[dict[str, torch.Tensor]]:
    """The original's state dict (``module.`` stripped) inside ``payload``, or None if it holds none."""
    if _is_original(payload):
        return _strip_module(payload)
    if isinstance(payload, Mapping):
        for key in ORIGINAL_WRAPPERS:
            if _is_original(payload.get(key)):
                return _strip_module(payload[key])
    return None


def _require(state: Mapping[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in state:
        raise XTaskError(f"{path}: an original xtask_mt state dict without {key}; the file is incomplete")
    return state[key]


def original_architecture(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """enc_layers, num_classes, batch_norm, decoder_width and the TTNet width, read from the shapes."""
    blocks = []
    for stage, prefix in enumerate(("pretrained_encoder.layer1.1.", "pretrained_encoder.layer2.",
                                    "pretrained_encoder.layer3.", "pretrained_encoder.layer4."), start=1):
        found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
        blocks.append(len(found))
    bottleneck = any(k.startswith("pretrained_encoder.") and ".conv3." in k for k in state)
    enc_layers = RESNETS.get((tuple(blocks), bottleneck))
    if enc_layers is None:
        raise XTaskError(f"{path}: the encoder has {blocks} blocks per stage"
                         f"{' (bottleneck)' if bottleneck else ''}, not a ResNet 18/34/50/101/152")
    head = _require(state, "decoder_segmt.conv6.0.weight", path)
    ttnet = _require(state, "trans_s2d.enc1.double_conv.0.conv.0.weight", path)
    return {"enc_layers": enc_layers, "num_classes": int(head.shape[0]), "decoder_width": int(head.shape[1]),
            "batch_norm": "trans_s2d.enc1.double_conv.0.conv.1.weight" in state,
            "ttnet_channels": int(ttnet.shape[0])}


def _architecture(cfg: DatasetConfig) -> dict[str, Any]:
    """What shapes the network, by params key: the ``model`` section and ``data.num_classes``."""
    return {**{f"model.{k}": v for k, v in dataclasses.asdict(cfg.model).items()},
            "data.num_classes": cfg.data.num_classes}


def check_original_architecture(arch: dict[str, Any], cfg: DatasetConfig, path: Path) -> None:
    """Refuse, in one line naming the params key, an original checkpoint of another architecture."""
    ours = _architecture(cfg)
    for key in ("model.enc_layers", "data.num_classes", "model.decoder_width", "model.batch_norm"):
        found = arch[key.split(".")[1]]
        if found != ours[key]:
            raise XTaskError(f"{path}: an original xtask_mt checkpoint with {key} = {found!r}, but params say "
                             f"{cfg.name}.{key} = {ours[key]!r}; set it to {found!r} to use this file")
    # The original's TTNets are 64 channels wide, 128 with its --wider_ttnet; ours are ttnet_width,
    # doubled by wider_ttnet: only the product is in the file.
    width = cfg.model.ttnet_width * (2 if cfg.model.wider_ttnet else 1)
    if arch["ttnet_channels"] != width:
        raise XTaskError(f"{path}: an original xtask_mt checkpoint with TaskTransferNets {arch['ttnet_channels']} "
                         f"channels wide, but params say {cfg.name}.model.ttnet_width = {cfg.model.ttnet_width} with "
                         f"{cfg.name}.model.wider_ttnet = {cfg.model.wider_ttnet} ({width} channels); the original's "
                         "are 64, or 128 with wider_ttnet")


def _saved_architecture(saved: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's architecture by params key: from its sections, or from the flat keys of checkpoints
    written before the params had sections."""
    if isinstance(saved.get("model"), Mapping):
        data = saved.get("data") if isinstance(saved.get("data"), Mapping) else {}
        return {**{f"model.{k}": v for k, v in saved["model"].items()}, "data.num_classes": data.get("num_classes")}
    return {**{f"model.{f.name}": saved.get(f.name) for f in dataclasses.fields(ModelConfig)},
            "data.num_classes": saved.get("num_classes")}


def check_config(saved: Mapping[str, Any], cfg: DatasetConfig, path: Path) -> None:
    trained = _saved_architecture(saved)
    for key, value in _architecture(cfg).items():
        if trained.get(key) != value:
            raise XTaskError(f"{path}: trained with {key} = {trained.get(key)!r}, but params say "
                             f"{cfg.name}.{key} = {value!r}; retrain (dvc repro)")


def load_weights(path: str | Path, cfg: DatasetConfig) -> Weights:
    """The weights in ``path`` (either format, on the CPU), after checking they fit ``cfg``'s model."""
    path = Path(path)
    payload = checkpoint.load(path, map_location="cpu")
    if isinstance(payload, Mapping) and isinstance(payload.get("model"), Mapping) and "config" in payload:
        if not isinstance(payload["config"], Mapping):
            raise XTaskError(f"{path}: 'config' is {_describe(payload['config'])}, expected the training params")
        check_config(payload["config"], cfg, path)
        seed, epoch = payload.get("seed"), payload.get("epoch")
        method = payload.get("method", "xtask")
        if method not in METHODS:
            raise XTaskError(f"{path}: method {method!r} is none of {list(METHODS)}")
        run = payload.get("run_config")
        return Weights(dict(payload["model"]), "xtask", dict(payload["config"]),
                       None if seed is None else int(seed), None if epoch is None else int(epoch), method,
                       dict(run) if isinstance(run, Mapping) else None)
    state = original_state(payload)
    if state is None:
        raise XTaskError(f"{path}: not a model checkpoint: expected {EXPECTED}, got {_describe(payload)}")
    check_original_architecture(original_architecture(state, path), cfg, path)
    try:
        converted = convert_original_state_dict(state)
    except XTaskError as err:
        raise XTaskError(f"{path}: {err}") from None
    return Weights(converted, "original", None, None, None)


def check_fits(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """One line for the first key that is missing, unexpected or of another shape (not torch's list)."""
    mine = model.state_dict()
    for key in mine:
        if key not in state:
            raise XTaskError(f"{path}: no weights for {key}; the file does not hold a whole model")
    for key, value in state.items():
        if key not in mine:
            raise XTaskError(f"{path}: {key} is not a weight of this model")
        if tuple(value.shape) != tuple(mine[key].shape):
            raise XTaskError(f"{path}: {key} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(mine[key].shape)}")


class InputConvention(torch.nn.Module):
    """A network behind the other input convention: ``normalise`` turns [0, 1] images into normalised
    ones before it, otherwise normalised images are turned back into [0, 1]."""

    def __init__(self, net: XTaskNet, normalise: bool):
        super().__init__()
        self.net, self.normalise = net, normalise
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, with_transfer: bool = True) -> XTaskOutput:
        x = (x - self.mean) / self.std if self.normalise else x * self.std + self.mean
        return self.net(x, with_transfer=with_transfer)


def trained_on_normalised_input(weights: Weights, fmt: str) -> bool:
    """The input convention the network was trained with: the original normalised Cityscapes images
    only; a checkpoint of this project records its protocol (those from before it had one all
    trained on normalised images)."""
    if weights.source == "original":
        return fmt != "nyu"
    if not weights.config or "protocol" not in weights.config:
        return True
    return normalised_input(fmt, protocol_of(weights.config))


def trained_model(cfg: DatasetConfig, path: str | Path, method: Optional[Method] = None
                  ) -> tuple[torch.nn.Module, Weights]:
    """``cfg``'s model (CPU, eval mode) holding the weights of ``path``, taking images in the params'
    input convention whatever the file's origin, and what the file said. ``method``: refuse a
    checkpoint of another method (None: whichever the file holds)."""
    weights = load_weights(path, cfg)
    if method is not None and weights.method != method.name:
        raise XTaskError(f"{path}: a {weights.method} checkpoint, but {method.name} was asked to be evaluated")
    model = build_model(cfg.model, cfg.data.num_classes, METHODS[weights.method])
    check_fits(model, weights.state_dict, Path(path))
    model.load_state_dict(weights.state_dict)
    fed = normalised_input(cfg.data.format, protocol_of(cfg.protocol))
    if trained_on_normalised_input(weights, cfg.data.format) != fed:
        return InputConvention(model, normalise=not fed).eval(), weights
    return model.eval(), weights
