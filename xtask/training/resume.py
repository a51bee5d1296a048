"""What a resumable training state holds, where it lives and when it may be resumed.

The state lives in a scratch folder outside DVC's outputs, keyed by what the run's result depends on:
``<scratch>/<dataset>-<method>-seed<k>/<hash>/state.pt``, the hash over the train stage's params
(the sections ``TRAINED``), the seed, the method, the prepared data's metadata and the sources of the
code units the train stage depends on (``TRAIN_CODE``, the same as its code deps in dvc.yaml). So a run
resumes only a state of the very same run, never mixes in another, and DVC's outputs (``models/``) stay
ordinary cached outputs that its run-cache can restore. The folder is removed once the run finished
and its model is written.

The state (model, optimiser, scheduler, balancing weights, loss scaler, every random generator, the
position in the epoch, the best model so far and the per-epoch log) is written atomically at most every
``save_every_s`` seconds, at a step boundary or an epoch end, and at the step where SIGTERM/SIGINT arrived.
"""
from __future__ import annotations

import json
import random
import shutil
import signal
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from xtask.common.config import TRAINED, DatasetConfig, by_key
from xtask.common.digest import code_hash, config_hash
from xtask.core import checkpoint

# The code a trained model depends on, relative to the repository root: the train stage's code deps
# in dvc.yaml (tests/test_dependencies.py holds the two together).
TRAIN_CODE = ("pipeline/train.py", "xtask/common", "xtask/core", "xtask/training")
STATE = "state.pt"


def hashed_config(cfg: DatasetConfig, seed: int, method: str, data_meta: dict[str, Any]) -> dict[str, Any]:
    """Everything the run's result depends on, as plain values."""
    return {**cfg.sections(TRAINED), "dataset": cfg.name, "seed": seed, "method": method,
            "data": data_meta, "code": code_hash(TRAIN_CODE)}


def run_config(hashed: dict[str, Any]) -> dict[str, Any]:
    """What decided a finished run's model whatever its seed: ``hashed_config`` without the seed, the prepared
    data's metadata as its digest (so that the dict stays readable beside the params). Seeds of one run
    config are what the results table may average; best.pt carries it to the evaluate stage."""
    out = {k: v for k, v in hashed.items() if k != "seed"}
    out["data"] = config_hash(hashed["data"])
    return out


def describe_change(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """``loss.alpha 0.01 -> 0.5, code 'a1b2' -> 'c3d4'``: what differs between two hashed configs (the prepared
    data's metadata compared as one value)."""
    old, new = by_key(old, whole=("data",)), by_key(new, whole=("data",))
    changed = [k for k in sorted(set(old) | set(new))
               if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:limit])


class Scratch:
    """The scratch folders of one run (dataset, method, seed): one per hashed config."""

    def __init__(self, root: Path, cfg_name: str, method: str, seed: int, config: dict[str, Any]):
        self.config = config
        self.digest = config_hash(config)
        self.group = Path(root) / f"{cfg_name}-{method}-seed{seed}"
        self.dir = self.group / self.digest
        self.state_path = self.dir / STATE

    def load(self) -> Optional[dict[str, Any]]:
        """The saved state of this very run, or None."""
        if not self.state_path.is_file():
            return None
        state = checkpoint.load(self.state_path)
        return state if state.get("config_hash") == self.digest else None

    def others(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Unfinished states of this run under other params or code (kept: going back to them resumes)."""
        if not self.group.is_dir():
            return
        for path in sorted(self.group.glob(f"*/{STATE}")):
            if path.parent.name == self.digest:
                continue
            try:
                state = checkpoint.load(path)
            except Exception:  # a damaged or foreign file says nothing about this run
                continue
            yield path, state.get("hashed_config", {})

    def save(self, state: dict[str, Any]) -> None:
        checkpoint.save(self.state_path, state)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.group.is_dir() and not any(self.group.iterdir()):
            self.group.rmdir()


def rng_state(augment: torch.Generator, sampler: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "augment": augment.get_state(),
        "sampler": sampler.get_state(),
    }


def restore_rng(state: dict[str, Any], augment: torch.Generator, sampler: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuples(state["python"]))
    augment.set_state(state["augment"])
    sampler.set_state(state["sampler"])


def _tuples(x):
    """random.setstate wants tuples; a checkpoint round trip may hand back lists."""
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x


class StopRequest:
    """SIGTERM/SIGINT set a flag that the step loop reads at the next step boundary."""

    def __init__(self):
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self) -> bool:
        return self.signal is not None
