"""Throughput figures of the pieces that bound a reproduction's wall time.

Every figure runs the same code as training and evaluation (``TrainingRun.train_step``, the ``Predictor``,
the batch loader, ``PaperMetrics``) at a dataset's paper shapes, on random data.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from xtask.common.cli import run
from xtask.common.config import DataConfig, DatasetConfig, load_params, replace
from xtask.common.methods import METHODS
from xtask.common.metrics import PaperMetrics, StandardMetrics
from xtask.common.prepared import DEPTH_KINDS, IMAGE_DTYPES, PreparedSplit, create_arrays
from xtask.core.batches import Batch, batch_spec, iterate, make_loader
from xtask.core.hardware import Hardware, resolve
from xtask.core.predictor import Predictor
from xtask.core.protocol import protocol_of
from xtask.data.prepare import RawSplit
from xtask.data.synthetic import generate
from xtask.training.run import TrainingRun


def random_batch(data: DataConfig, n: int, device: torch.device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    h, w = data.height, data.width
    image = torch.randn(n, 3, h, w, generator=g)
    seg = torch.randint(0, data.num_classes, (n, h, w), generator=g)
    seg[:, : h // 8] = data.ignore_index  # some ignored pixels, as in real labels
    depth = torch.rand(n, 1, h, w, generator=g) * 0.3
    depth[:, :, : h // 4] = 0  # and some invalid depth
    seg_mask = (seg != data.ignore_index).unsqueeze(1) if data.format == "cityscapes" else None
    batch = Batch(image, seg, depth, depth > 0, seg_mask)
    return Batch(*(t.to(device) if t is not None else None for t in batch))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn: Callable[[], None], items_per_call: int, steps: int, warmup: int, device: torch.device) -> float:
    """Items per second over ``steps`` calls after ``warmup`` calls; one device sync at each end."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return items_per_call * steps / (time.perf_counter() - start)


def _flops(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def _write_prepared(root: Path, data: DataConfig, n: int) -> None:
    """A prepared split of random content at the dataset's shapes (what the prepare stage writes)."""
    rng = np.random.default_rng(0)
    d = root / "val"
    d.mkdir(parents=True)
    h, w = data.height, data.width
    image, label, depth = create_arrays(d, n, h, w, IMAGE_DTYPES[data.format])
    image[:] = rng.integers(0, 256, image.shape) if image.dtype == np.uint8 else rng.random(image.shape)
    label[:] = rng.integers(0, data.num_classes, label.shape)
    depth[:] = rng.random(depth.shape, dtype=np.float32)
    for arr in (image, label, depth):
        arr.flush()
    (d / "stems.json").write_text(json.dumps([str(i) for i in range(n)]))
    meta = {"kind": data.format, "num_classes": data.num_classes, "ignore_index": data.ignore_index,
            "depth_kind": DEPTH_KINDS[data.format], "image_dtype": IMAGE_DTYPES[data.format], "height": h, "width": w,
            "counts": {"train": 0, "val": n}, "train_depth_mean": 0.1}
    (root / "meta.json").write_text(json.dumps(meta))


def loader_rate(cfg: DatasetConfig, *, batches: int = 8) -> float:
    """Samples per second that one CPU core feeds: batch reads from the prepared arrays, then
    normalisation and augmentation (RandomScaleCrop, flip), all in one thread."""
    n = cfg.optim.batch_size * batches
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            _write_prepared(Path(tmp), cfg.data, n)
            split = PreparedSplit(Path(tmp), "val")
            loader = make_loader(split, cfg.optim.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
            spec = batch_spec(cfg.data, protocol_of(cfg.protocol))
            for _ in iterate(loader, torch.device("cpu"), spec, torch.Generator().manual_seed(0)):  # warm the cache
                pass
            start = time.perf_counter()
            count = sum(b.image.shape[0] for b in iterate(loader, torch.device("cpu"), spec,
                                                            torch.Generator().manual_seed(0)))
            return count / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def raw_decode_rate(data: DataConfig, *, samples: int = 4, height: int = 1024, width: int = 2048) -> float:
    """Samples per second of the original's path: decode a full-size Cityscapes PNG triple and resize.

    The triples are synthetic scenes at Cityscapes' 2048x1024 (they compress like simple drawings, so
    their PNGs decode at least as fast as real photographs).
    """
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "raw", seed=0, n_train=1, n_val=samples, height=height, width=width)
        split = RawSplit("cityscapes", Path(tmp) / "raw", "val", num_classes=data.num_classes, height=data.height,
                         width=data.width)
        split.read([0])  # warm the page cache and OpenCV
        start = time.perf_counter()
        for i in range(samples):
            split.read([i])
        return samples / (time.perf_counter() - start)


@dataclass(frozen=True)
class Rig:
    """XTask at a dataset's shapes, ready to time: its training run (from a random init) and one random batch."""
    run: TrainingRun
    batch: Batch


def rig(cfg: DatasetConfig, hw: Hardware) -> Rig:
    torch.manual_seed(0)
    run = TrainingRun(cfg, METHODS["xtask"], hw, pretrained=False)
    return Rig(run, random_batch(cfg.data, cfg.optim.batch_size, hw.device))


def train_rate(r: Rig, *, steps: int, warmup: int) -> float:
    """Images per second of the full training step (``TrainingRun.train_step``)."""
    r.run.train_model.train()
    return rate(lambda: r.run.train_step(r.batch), r.run.cfg.optim.batch_size, steps, warmup, r.run.hw.device)


def eval_rate(r: Rig, *, steps: int, warmup: int) -> float:
    """Images per second of evaluation: the direct-only forward (``Predictor``) and the paper and standard
    metric updates."""
    data, hw = r.run.cfg.data, r.run.hw
    predictor = Predictor(r.run.model, hw)
    metrics = (PaperMetrics(data.num_classes, data.ignore_index), StandardMetrics(data.num_classes, data.ignore_index))

    def eval_step():
        out = predictor(r.batch.image)
        for m in metrics:
            m.update(out.seg, out.depth, r.batch.seg, r.batch.depth)

    return rate(eval_step, r.run.cfg.optim.batch_size, steps, warmup, hw.device)


def bench(cfg: DatasetConfig, hw: Hardware, *, steps: int, warmup: int) -> dict[str, Any]:
    bs, data = cfg.optim.batch_size, cfg.data
    r = rig(cfg, hw)
    model, batch = r.run.model, r.batch

    one = Batch(*(t[:1] if t is not None else None for t in batch))
    model.eval()
    with torch.no_grad():
        fwd_flops = _flops(lambda: model(hw.input(one.image)))
    model.train()
    step_flops = _flops(lambda: r.run.train_step(one))

    train = train_rate(r, steps=steps, warmup=warmup)
    evaluation = eval_rate(r, steps=steps, warmup=warmup)

    logits = torch.randn(bs, data.num_classes, data.height, data.width, device=hw.device)
    paper = PaperMetrics(data.num_classes, data.ignore_index)
    metric_rate = rate(lambda: paper.update(logits, batch.depth, batch.seg, batch.depth), bs, max(steps, 20),
                        2, hw.device)

    extra = {"raw_png_samples_per_s": raw_decode_rate(data)} if data.format == "cityscapes" else {}
    device_name = torch.cuda.get_device_name(hw.device) if hw.device.type == "cuda" else "cpu"
    return {
        "train_img_per_s": train,
        "eval_img_per_s": evaluation,
        "loader_samples_per_s": loader_rate(cfg),
        "metric_img_per_s": metric_rate,
        "fwd_gflops_per_img": fwd_flops / 1e9,
        "train_step_gflops_per_img": step_flops / 1e9,
        "train_tflops": step_flops * train / 1e12,
        "device": device_name,
        "amp": hw.amp,
        "channels_last": hw.channels_last,
        "compile": hw.compile,
        "batch_size": bs,
        "shape": [data.height, data.width],
        "num_classes": data.num_classes,
        "enc_layers": cfg.model.enc_layers,
        "steps": steps,
        "threads": torch.get_num_threads(),
        **extra,
    }


USAGE = """Benchmark: throughput of training, evaluation, loading and table metrics at the paper's shapes.

Prints one JSON object per dataset, keyed by the dataset's name. The shapes, batch size and model come
from the dataset's params.yaml section (Cityscapes: bs 8, 128x256, 7 classes; NYUv2: bs 6, 288x384, 13).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE)
    parser.add_argument("--dataset", choices=("cityscapes", "nyu"), action="append",
                        help="dataset shapes to benchmark (repeatable; default both)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", choices=("auto", "off", "bf16", "fp16"), default="auto",
                        help="autocast dtype (auto: bf16 on a GPU that has it, off on a CPU)")
    parser.add_argument("--channels-last", choices=("auto", "on", "off"), default=None)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 30 on GPU)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    params = load_params(args.params)
    for name in args.dataset or ["cityscapes", "nyu"]:
        cfg = params.dataset(name)
        changes = {"compile": args.compile or cfg.runtime.compile}
        if args.channels_last:
            changes["channels_last"] = args.channels_last
        cfg = replace(cfg, **changes)
        hw = resolve(cfg.runtime, cfg.protocol, args.device, amp_override=args.amp)
        gpu = hw.device.type == "cuda"
        steps = args.steps or (30 if gpu else 3)
        result = bench(cfg, hw, steps=steps, warmup=(10 if hw.compile else 3) if gpu else 1)
        print(json.dumps({name: result}), flush=True)


if __name__ == "__main__":
    run(main)
