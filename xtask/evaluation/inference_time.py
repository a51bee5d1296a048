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
from xtask.core.model import build_model
from xtask.core.hardware import Hardware
from xtask.core.weights import trained_model

MODES = {"direct": False, "full": True}  # name -> with_transfer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latencies_ms(run_model: torch.nn.Module, hw: Hardware, x: torch.Tensor, *, with_transfer: bool,
                 warmup: int, iters: int) -> list[float]:
    """Milliseconds of each of ``iters`` forward passes, after ``warmup`` untimed ones."""
    times = []
    with torch.no_grad(), hw.autocast():
        for _ in range(warmup):
            run_model(x, with_transfer=with_transfer)
        _sync(hw.device)
        for _ in range(iters):
            start = time.perf_counter()
            run_model(x, with_transfer=with_transfer)
            _sync(hw.device)
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
        model, weights = trained_model(cfg, ckpt_path)
        source = f"checkpoint ({weights.source} format)"
    else:
        model = build_model(cfg, pretrained=False).eval()
        source = ("random: no checkpoint; a randomly initialised model of the same architecture "
                  "(time does not depend on the weights)")
    run_model = hw.model(model).eval()
    image = torch.randn(1, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(0))
    x = hw.input(image.to(hw.device))
    result: dict[str, Any] = {
        "dataset": cfg.name, "method": "xtask", "checkpoint": None if ckpt_path is None else str(ckpt_path),
        "weights": source, "random_weights": ckpt_path is None,
        "batch_size": 1, "height": cfg.height, "width": cfg.width,
        "device": hw.device.type, "device_name": device_name(hw.device), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "amp": hw.amp, "channels_last": hw.channels_last, "compile": hw.compile,
        "warmup": warmup, "iters": iters,
    }
    for name, with_transfer in MODES.items():
        times = latencies_ms(run_model, hw, x, with_transfer=with_transfer, warmup=warmup, iters=iters)
        result[name] = summarise(times)
    return result
