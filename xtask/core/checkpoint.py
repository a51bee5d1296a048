"""Checkpoints are data: tensors and plain values only, written atomically, read with weights_only."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from xtask.common.errors import XTaskError
from xtask.common.io import atomic_path


def save(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise XTaskError(f"{path}: checkpoint not found (run the train stage first)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise XTaskError(f"{path}: not a loadable checkpoint ({type(err).__name__}); "
                         "only tensors and plain values are accepted") from None
