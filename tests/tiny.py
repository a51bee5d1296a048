"""What the training tests share: a tiny synthetic dataset, prepared, and a config that trains on it in
seconds on a CPU."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from xtask.common.config import DatasetConfig, load_params
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.training.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = {"height": 32, "width": 64, "epochs": 2, "batch_size": 4, "decoder_width": 8, "ttnet_width": 4,
        "device": "cpu"}


def tiny_config(**changes) -> DatasetConfig:
    """The synthetic section of params.yaml at the tiny sizes, with ``changes``."""
    return dataclasses.replace(load_params(REPO / "params.yaml").dataset("synthetic"), **{**TINY, **changes})


def prepare_tiny(root: Path, *, seed: int = 5, n_train: int = 8, n_val: int = 4, num_classes: int = 7) -> Path:
    """Generate raw synthetic data under ``root`` (once) and prepare it; returns the prepared folder."""
    raw = root / "raw"
    if not raw.exists():
        generate(raw, seed=seed, n_train=n_train, n_val=n_val, height=64, width=128)
    out = root / f"prepared{num_classes}"
    if not out.exists():
        prepare("cityscapes", raw, out, num_classes=num_classes, height=TINY["height"], width=TINY["width"],
                expect_full_size=False, progress=False)
    return out


def train_tiny(cfg: DatasetConfig, seed: int, data: Path, out: Path, **kwargs) -> dict:
    """``train`` with its scratch folder beside ``out`` and no progress bars."""
    return train(cfg, seed, data, out, scratch_root=Path(out).parent / "scratch", progress=False, **kwargs)
