"""What a resumable training state holds and when it may be resumed.

The state is written atomically at every epoch end (and at the step where SIGTERM/SIGINT arrived):
model, optimiser, scheduler, balancing weights, loss scaler, every random generator, the position
in the epoch, the best-so-far and the per-epoch log. A state is resumed only by a run whose params
and code hash equal the state's; an unfinished state from other params or code is refused, never
mixed in, and a finished one is trained again (DVC reruns the stage when its code changed: a
finished run of the old code must not stand in for it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import signal
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .config import DatasetConfig
from .errors import XTaskError

# Settings that change how fast a run goes, not what it computes (up to kernel rounding): a run may
# resume with other values of these, e.g. on another machine after a preemption.
NOT_HASHED = ("device", "workers", "compile", "channels_last", "data_source", "deterministic")


def code_hash(package: Path = Path(__file__).parent) -> str:
    """Of every Python source of the ``xtask`` package (what computes the result)."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def hashed_config(cfg: DatasetConfig, seed: int, method: str = "xtask") -> dict[str, Any]:
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_HASHED}
    config["seed"] = seed
    config["method"] = method
    config["code"] = code_hash()
    return config


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str))


def check_resumable(state: Optional[dict], path: Path, config: dict[str, Any]) -> Optional[dict]:
    """The state to resume from, or None to start afresh; refuses an unfinished run with other params
    or code."""
    if state is None:
        return None
    if "config_hash" not in state:  # not written by a resumable run (an older or foreign checkpoint)
        return None
    if state.get("config_hash") == config_hash(config):
        return state
    if state.get("finished"):
        return None  # a finished run with other params or code: this is a new run, nothing is mixed
    keys = changed_keys(state.get("hashed_config", {}), config)
    shown = ", ".join(f"{k} {state.get('hashed_config', {}).get(k)!r} -> {config.get(k)!r}" for k in keys[:4])
    raise XTaskError(f"{path}: an unfinished run with other params is here ({shown}); resume it with its "
                     f"params and code, or delete {path.parent} (or pass --restart) to start over")


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


class Interrupted(XTaskError):
    """Training stopped on request; the state was saved at a step boundary."""
