"""Float64 training steps: the parity check's float64 cases and CI's trace check, never a training run.

In float64 the CPU kernels' summation order (thread count, instruction set) moves a step's results by
rounding of order 1e-16, far below any real difference, so a few optimiser steps can be compared with a
fixed, tight tolerance. Everything a step creates (the model's parameters, the balancing weights, the
optimiser states) takes torch's default dtype, so switching the default is all the mode needs: the hot
path has no float64 branch.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def float64_mode() -> Iterator[None]:
    """Inside: new floating point tensors and modules are float64 (torch's default dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
