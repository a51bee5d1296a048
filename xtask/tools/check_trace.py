"""The float64 trace: the first optimiser steps of the default config, from fixed weights on fixed batches,
computed in float64 and compared with a committed trace at a fixed tolerance.

What it is for: CI on any x86-64 CPU sees any change of what training computes. The committed metrics
(``check_metrics``) can only be held to the move between CPU kinds (about a mIoU point after 12 float32
epochs); in float64, a few steps from the same weights on the same batches agree across thread counts
and instruction sets to rounding (~1e-15), while a one-line change of a loss, a balancer or the protocol
moves them by orders of magnitude more. So this check is tight where the metrics check cannot be.

Every input is made without torch's random number generators, whose draws can depend on the CPU's kernels
(the fixtures' README): the weights come from numpy's PCG64 by the parity fixtures' rule, the batches
from the synthetic generator (numpy) through the prepare stage and the training data path (the
augmentation draws from a seeded CPU generator, recorded in the trace as a checksum of every batch).

The variants cover every loss, balancing and protocol switch: the default section as params.yaml has it,
then the same section with one group of keys changed (``VARIANTS``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from xtask.common.cli import run
from xtask.common.config import DatasetConfig, load_params, replace
from xtask.common.errors import XTaskError
from xtask.common.io import write_json
from xtask.common.methods import METHODS
from xtask.common.prepared import PreparedSplit
from xtask.core.batches import iterate, make_loader
from xtask.core.hardware import resolve
from xtask.core.model import build_model
from xtask.data.prepare import prepare
from xtask.data.synthetic import generate
from xtask.training.float64 import float64_mode
from xtask.training.run import TrainingRun

STEPS = 3          # optimiser steps per variant
IMAGES = 16        # synthetic training images generated: two batches of the default's 8
# ||a - b|| / ||b|| per recorded row. Measured on an AMD EPYC (docs/ci.md): 1 against 2 threads and
# AVX2 against AVX-512 kernels 0; a rounding-level change of the input (x (1 + 1e-15)) at most 1e-12.
# A one-line change of a loss weight, a mask or a balancer moves some row by more than 1e-6.
TOLERANCE = 1e-9

# The variants other than the default run on smaller batches (SMALL): the code paths are the same, at a
# tenth of the arithmetic, so that the whole check takes seconds.
SMALL = {"batch_size": 4, "height": 32, "width": 64}
# name -> (method, the keys changed from the dataset section). Together they run every loss (each lp,
# tdep and tseg choice, label smoothing), every balancer (uncertainty, the original's and the clean
# GradNorm, none), both protocols and both data formats' batch paths.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("xtask", {}),
    "gradnorm": ("xtask", {"weighting": "gradnorm"}),
    "losses": ("xtask", {"lp": "logL1", "tdep_loss": "SSIM", "tseg_loss": "kl", "label_smoothing": 0.1}),
    "corrected": ("xtask", {"protocol.name": "corrected", "weighting": "gradnorm", "tseg_loss": "kl",
                            "lp": "smoothL1", "label_smoothing": 0.1}),
    "corrected-mse": ("xtask", {"protocol.name": "corrected", "lp": "MSE", "alpha": 0.2, "gamma": 0.3}),
    "nyu-format": ("xtask", {"format": "nyu", "num_classes": 13}),
    "nyu-corrected": ("xtask", {"format": "nyu", "num_classes": 13, "protocol.name": "corrected"}),
    "mtl": ("mtl", {}),
    "stl_seg": ("stl_seg", {}),
    "stl_depth": ("stl_depth", {}),
}


def seeded_weights(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The parity fixtures' weight rule, drawn from numpy (the same values on every CPU)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, t in model.state_dict().items():
        shape = tuple(t.shape)
        if not t.is_floating_point():
            out[key] = torch.zeros_like(t)
            continue
        if key.endswith("running_mean"):
            v = 0.1 * rng.standard_normal(shape)
        elif key.endswith("running_var"):
            v = 0.5 + rng.random(shape)
        elif len(shape) >= 2:
            v = rng.standard_normal(shape) * math.sqrt(2 / int(np.prod(shape[1:])))
        elif key.endswith("weight"):
            v = 1 + 0.1 * rng.standard_normal(shape)
        else:
            v = 0.1 * rng.standard_normal(shape)
        out[key] = torch.from_numpy(np.asarray(v, dtype=np.float64)).to(t.dtype)
    return out


class TraceData:
    """The prepared training splits the trace reads (in a temporary folder), prepared on first use per
    on-disk format and size: the synthetic scenes in the Cityscapes layout, and the same scenes written in
    MTAN's NYUv2 layout."""

    def __init__(self, cfg: DatasetConfig, root: Path):
        gen = cfg.generate
        if gen is None:
            raise XTaskError(f"params.yaml: {cfg.name}.generate: the trace needs the synthetic generator's settings")
        self.root = root
        generate(root / "raw-cityscapes", seed=gen.seed, n_train=IMAGES, n_val=1, height=gen.height, width=gen.width)
        self._folders: dict[tuple[str, int, int], Path] = {}

    def folder(self, fmt: str, height: int, width: int) -> Path:
        key = (fmt, height, width)
        if key not in self._folders:
            out = self.root / f"prepared-{fmt}-{height}x{width}"
            raw = self.root / "raw-cityscapes"
            if fmt == "nyu":
                raw = self.root / f"raw-nyu-{height}x{width}"
                _as_nyu(self.folder("cityscapes", height, width), raw)
            with contextlib.redirect_stderr(io.StringIO()):  # prepare's notice that these are subsets
                prepare(fmt, raw, out, num_classes=13 if fmt == "nyu" else 7, height=height, width=width,
                        expect_full_size=False, progress=False)
            self._folders[key] = out
        return self._folders[key]


def _as_nyu(prepared: Path, out: Path) -> None:
    """The prepared Cityscapes-layout scenes in MTAN's layout: images in [0, 1], void -1, depth in metres
    (0.2 / inverse depth; 0 where none was measured)."""
    for split in ("train", "val"):
        image, label, inverse = PreparedSplit(prepared, split).arrays()
        for kind in ("image", "label", "depth"):
            (out / split / kind).mkdir(parents=True)
        for i in range(len(label)):
            d = np.nan_to_num(np.asarray(inverse[i], dtype=np.float64))
            np.save(out / split / "image" / f"{i}.npy", (np.asarray(image[i]) / 255.0).astype(np.float32))
            np.save(out / split / "label" / f"{i}.npy", np.where(label[i] < 7, label[i].astype(np.int16), -1))
            np.save(out / split / "depth" / f"{i}.npy",
                    np.where(d > 0, 0.2 / np.where(d > 0, d, 1.0), 0.0).astype(np.float32)[..., None])


def _norm(tensors) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


def trace_variant(cfg: DatasetConfig, method_name: str, data: TraceData) -> dict[str, list]:
    """``STEPS`` training steps of ``cfg`` in float64: per step the batch checksum, the loss terms, the
    balanced total, the balancing weights, the gradient norm and the parameters' norms."""
    method = METHODS[method_name]
    with float64_mode():
        torch.manual_seed(0)  # the torchvision initialisers draw; the weights are replaced below
        model = build_model(cfg.model, cfg.data.num_classes, method)
        model.load_state_dict(seeded_weights(model, seed=0))
        run = TrainingRun(cfg, method, resolve(cfg.runtime, cfg.protocol, "cpu"), model=model)
        balancer, optimizer = run.balancer, run.optimizer
        params = [p for p in model.parameters()]
        initial = [p.detach().clone() for p in params]
        grad_norms: list[float] = []
        optimizer.register_step_pre_hook(lambda *_: grad_norms.append(_norm(p.grad for p in params
                                                                               if p.grad is not None)))
        split = PreparedSplit(data.folder(cfg.data.format, cfg.data.height, cfg.data.width), "train")
        loader = make_loader(split, cfg.optim.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
        batches = iterate(loader, torch.device("cpu"), run.spec, augment_generator=torch.Generator().manual_seed(1))
        rows: dict[str, list] = {k: [] for k in ("batch", "terms", "total", "balancing", "grad_norm", "param_norm",
                                                 "param_delta_norm")}
        for step in range(STEPS):
            batch = next(batches, None)
            if batch is None:
                batches = iterate(loader, torch.device("cpu"), run.spec,
                                  augment_generator=torch.Generator().manual_seed(2 + step))
                batch = next(batches)
            model.train()
            terms, total = run.train_step(batch)
            rows["batch"].append([float(batch.image.sum()), float(batch.depth.sum()), float(batch.seg.sum()),
                                  float(batch.depth_mask.sum()),
                                  -1.0 if batch.seg_mask is None else float(batch.seg_mask.sum())])
            rows["terms"].append([float(terms[t].detach()) for t in method.terms])
            rows["total"].append([float(total)])
            rows["balancing"].append(list(balancer.weights().values()))
            rows["param_norm"].append([_norm(params)])
            rows["param_delta_norm"].append([_norm(p - q for p, q in zip(params, initial))])
        rows["grad_norm"] = [[g] for g in grad_norms]
    return rows


def compute(cfg: DatasetConfig, variants: dict[str, tuple[str, dict[str, Any]]] = VARIANTS) -> dict[str, Any]:
    """The trace of every variant, one thread (the check's own run does not depend on it; this keeps it
    quick to compare against)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="xtask-trace-") as tmp:
            data = TraceData(cfg, Path(tmp))
            out = {}
            for name, (method, changes) in variants.items():
                small = {} if name == "default" else SMALL
                out[name] = trace_variant(replace(cfg, **small, **changes), method, data)
    finally:
        torch.set_num_threads(threads)
    return {"dataset": cfg.name, "steps": STEPS, "tolerance": TOLERANCE, "variants": out}


def differences(got: dict[str, Any], want: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """(where, ||a - b|| / ||b||) of every recorded row, the variants of both traces."""
    names = sorted(set(got["variants"]) | set(want["variants"]))
    for name in names:
        a, b = got["variants"].get(name), want["variants"].get(name)
        if a is None or b is None:
            yield f"{name}: {'not in the committed trace' if b is None else 'not computed'}", math.inf
            continue
        for key in sorted(set(a) | set(b)):
            ra, rb = a.get(key, []), b.get(key, [])
            if len(ra) != len(rb):
                yield f"{name} {key}: {len(ra)} steps against {len(rb)}", math.inf
                continue
            for step, (x, y) in enumerate(zip(ra, rb)):
                x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
                if x.shape != y.shape:
                    yield f"{name} {key} step {step + 1}: {x.shape} values against {y.shape}", math.inf
                    continue
                denom = np.linalg.norm(y)
                err = float(np.linalg.norm(x - y) / (denom if denom > 0 else 1.0))
                yield f"{name} {key} step {step + 1}", err if math.isfinite(err) else math.inf


def load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise XTaskError(f"{path}: missing or not valid JSON ({type(err).__name__}); write it with "
                         "python -m xtask.tools.check_trace --write") from None


USAGE = """CI's tight check of what training computes: the first optimiser steps of the default config in float64,
from fixed weights on fixed batches, for every loss, balancing and protocol variant (xtask/tools/check_trace.py),
against the committed trace, each recorded value within a fixed relative tolerance (1e-9). Seconds on a
CPU; any x86-64 CPU reproduces the trace to rounding, a one-line change of a loss, a balancer or the
protocol does not (docs/ci.md).

    python -m xtask.tools.check_trace            # compare with tests/trace_f64.json, exit 1 on a difference
    python -m xtask.tools.check_trace --write    # after an intended change: write the trace to commit
"""


DEFAULT = Path("tests/trace_f64.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=DEFAULT, help=f"the committed trace (default {DEFAULT})")
    parser.add_argument("--dataset", default="synthetic", help="the params.yaml section traced (default synthetic)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--write", action="store_true", help="write the trace instead of comparing with it")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help=f"only these variants (default all: {', '.join(VARIANTS)})")
    args = parser.parse_args()
    names = args.variants or list(VARIANTS)
    for name in names:
        if name not in VARIANTS:
            raise XTaskError(f"--variants: {name} is not a variant ({', '.join(VARIANTS)})")
    if args.write and args.variants:
        raise XTaskError("--write writes every variant: leave out --variants")
    cfg = load_params(args.params).dataset(args.dataset)
    want = None if args.write else load(args.trace)  # a missing trace fails before the minute of work
    variants = {n: VARIANTS[n] for n in names}
    print(f"trace: {len(variants)} variants x {STEPS} steps of {cfg.name} in float64, "
          f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} kernels", flush=True)
    got = compute(cfg, variants)
    if args.write:
        write_json(args.trace, got)
        print(f"trace: wrote {args.trace}")
        return
    want = {**want, "variants": {n: v for n, v in want.get("variants", {}).items() if n in variants}}
    rows = list(differences(got, want))
    tolerance = float(want.get("tolerance", TOLERANCE))
    bad = [(where, err) for where, err in rows if not err <= tolerance]
    worst = max(rows, key=lambda r: r[1] if math.isfinite(r[1]) else math.inf)
    for where, err in bad[:20]:
        print(f"FAIL {where}: relative difference {err:.3g} > {tolerance:.0e}")
    if bad:
        raise XTaskError(f"{len(bad)} of {len(rows)} traced values differ from {args.trace} beyond {tolerance:.0e}: "
                         "training computes something else; if intended, rerun with --write and commit the trace")
    print(f"trace: all {len(rows)} values within {tolerance:.0e} of {args.trace} (largest {worst[1]:.3g}, {worst[0]})")


if __name__ == "__main__":
    run(main)
