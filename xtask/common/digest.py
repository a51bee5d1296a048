"""Short digests that name a run: of code units (their Python sources) and of plain-value configs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def code_hash(units: tuple[str, ...], root: Path = REPO) -> str:
    """Of every Python source in ``units`` (files or folders under ``root``)."""
    digest = hashlib.sha256()
    for unit in units:
        path = root / unit
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(source.relative_to(root).as_posix().encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
