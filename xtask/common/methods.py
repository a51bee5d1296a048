"""The methods the results table compares, trained and scored by the same pipeline.

``xtask``: the paper (encoder, two decoders, two TaskTransferNets, the four loss terms).
``mtl``: the same encoder and decoders without TaskTransferNets: seg and depth losses only, the
same balancing. ``stl_seg`` / ``stl_depth``: one task's encoder and decoder and its plain loss, no
balancing (the original's main_stl.py). Everything else (data, schedule, epochs) is the dataset's.
"""
from __future__ import annotations

from dataclasses import dataclass

SEG, DEPTH = "seg", "depth"


@dataclass(frozen=True)
class Method:
    name: str
    tasks: tuple[str, ...]
    transfer: bool

    @property
    def terms(self) -> tuple[str, ...]:
        """The loss terms this method trains on (and logs)."""
        return (*self.tasks, *((f"{SEG}_transferred", f"{DEPTH}_transferred") if self.transfer else ()))

    @property
    def multi_task(self) -> bool:
        return len(self.tasks) == 2

    def balancing(self, configured: str) -> str:
        """A single task has nothing to balance: its loss is used as it is."""
        return configured if self.multi_task else "none"


METHODS = {
    "xtask": Method("xtask", (SEG, DEPTH), transfer=True),
    "mtl": Method("mtl", (SEG, DEPTH), transfer=False),
    "stl_seg": Method("stl_seg", (SEG,), transfer=False),
    "stl_depth": Method("stl_depth", (DEPTH,), transfer=False),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {name!r}")
    return METHODS[name]
