"""Inference time at batch 1, as the original's get_inference_time.py measured it: the direct
predictions only (``with_transfer=False``, the original's ``infer_only``) and the full model with
both TaskTransferNets, on one image of the params' height x width already on the device.

Each call is timed on its own, from a synchronised device to a synchronised device (on CUDA
``torch.cuda.synchronize``), so the latency includes everything the GPU does for the image.
"""
from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from xtask.common.config import DatasetConfig
from xtask.core.hardware import Hardware
from xtask.core.predictor import Predictor

MODES = {"direct": False, "full": True}  # name -> with_transfer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latencies_ms(predictor: Predictor, x: torch.Tensor, *, with_transfer: bool, warmup: int, iters: int
                 ) -> list[float]:
    """Milliseconds of each of ``iters`` forward passes, after ``warmup`` untimed ones."""
    times = []
    for _ in range(warmup):
        predictor(x, with_transfer=with_transfer)
    _sync(predictor.hw.device)
    for _ in range(iters):
        start = time.perf_counter()
        predictor(x, with_transfer=with_transfer)
        _sync(predictor.hw.device)
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def summarise(times_ms: list[float]) -> dict[str, float]:
    return {"images_per_s": 1000.0 * len(times_ms) / sum(times_ms),
            "latency_ms_median": statistics.median(times_ms),
            "latency_ms_p90": float(np.percentile(times_ms, 90)),
            "latency_ms_mean": statistics.fmean(times_ms)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def inference_time(cfg: DatasetConfig, hw: Hardware, ckpt_path: Optional[Path], *, warmup: int, iters: int
                   ) -> dict[str, Any]:
    """Both modes' figures; ``ckpt_path`` None times a randomly initialised model of the same architecture."""
    if ckpt_path is not None:
        predictor = Predictor.from_checkpoint(cfg, ckpt_path, hw)
        source = f"checkpoint ({predictor.weights.source} format)"
    else:
        predictor = Predictor.random(cfg, hw)
        source = ("random: no checkpoint; a randomly initialised model of the same architecture "
                  "(time does not depend on the weights)")
    height, width = cfg.data.height, cfg.data.width
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(hw.device)
    result: dict[str, Any] = {
        "dataset": cfg.name, "method": "xtask", "checkpoint": None if ckpt_path is None else str(ckpt_path),
        "weights": source, "random_weights": ckpt_path is None,
        "batch_size": 1, "height": height, "width": width,
        "device": hw.device.type, "device_name": device_name(hw.device), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "amp": hw.amp, "channels_last": hw.channels_last, "compile": hw.compile,
        "warmup": warmup, "iters": iters,
    }
    for name, with_transfer in MODES.items():
        times = latencies_ms(predictor, x, with_transfer=with_transfer, warmup=warmup, iters=iters)
        result[name] = summarise(times)
    return result
