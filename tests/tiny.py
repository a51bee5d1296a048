"""What the training tests share: a tiny synthetic dataset, prepared, and a config that trains on it in
seconds on a CPU."""
from __future__ import annotations

from pathlib import Path

from xtask.common.config import DatasetConfig, load_params, replace
from xtask.common.methods import METHODS
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.training.train import SAVE_EVERY_S, Storage, train

REPO = Path(__file__).resolve().parents[1]
TINY = {"height": 32, "width": 64, "epochs": 2, "batch_size": 4, "decoder_width": 8, "ttnet_width": 4,
        "device": "cpu"}


def tiny_config(**changes) -> DatasetConfig:
    """The synthetic section of params.yaml at the tiny sizes, with ``changes`` (keys by name, as
    ``xtask.common.config.replace`` takes them)."""
    return replace(load_params(REPO / "params.yaml").dataset("synthetic"), **{**TINY, **changes})


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


def train_tiny(cfg: DatasetConfig, seed: int, data: Path, out: Path, *, method=METHODS["xtask"],
               save_every_s: float = SAVE_EVERY_S) -> dict:
    """``train`` with its scratch folder beside ``out`` and no progress bars."""
    storage = Storage(data, out, Path(out).parent / "scratch", save_every_s=save_every_s)
    return train(cfg, method, seed, storage, progress=False)
