"""Access to tests/reference: the project's copy of the values the original xtask_mt code computed
(taken from ../shared/reference, where new versions appear; see tests/reference/fixtures/README.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from xtask.tools import parity

REFERENCE = Path(__file__).resolve().parent / "reference"
FIXTURES = REFERENCE / "fixtures"


def load(name: str) -> np.lib.npyio.NpzFile:
    path = FIXTURES / f"{name}.npz"
    if not path.is_file():
        pytest.fail(f"parity fixture {path} is missing from the checkout")
    return np.load(path)


def manifest() -> dict:
    return json.loads((FIXTURES / "MANIFEST.json").read_text())


def original_keys(enc_layers: int, num_classes: int, batch_norm: bool, wider_ttnet: bool) -> list[tuple[str, tuple, str]]:
    """(key, shape, dtype) in order, for one configuration of the original's state dict listing."""
    header = f"## enc_layers={enc_layers} num_classes={num_classes} batch_norm={batch_norm} wider_ttnet={wider_ttnet}:"
    lines = (REFERENCE / "original-xtask_mt-state-dict.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    out = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("#"):
            break
        key, rest = line.split(" ", 1)
        shape = tuple(int(s) for s in re.findall(r"\d+", rest.rsplit(" ", 1)[0]))
        out.append((key, shape, rest.rsplit(" ", 1)[1]))
    return out


def seeded_weight(key: str, shape: tuple, seed: int) -> torch.Tensor:
    """The fixture README's recipe for the weights behind model_parity.npz (the parity tool's own)."""
    return parity.seeded_weight(key, tuple(shape), seed)
