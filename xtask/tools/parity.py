"""Does this installation compute what the original xtask_mt code computed? Checks a folder of parity
fixtures (values produced by the original code, see tests/reference/fixtures/README.md and
protocol/README.md) against this project under ``protocol: original``.

Every fixture file found under the folder is checked, case by case (one prefix each):

- ``model_parity.npz`` (``MANIFEST.json``): the four outputs of the original's network from its
  seeded weights, loaded through ``convert_original_state_dict``;
- ``loss_parity.npz`` (``MANIFEST.json``): the four loss terms and the label/image losses;
- ``metric_parity.npz`` (``MANIFEST.json``): the paper metrics over a few batches;
- ``data_parity.npz`` (``PROTOCOL_MANIFEST.json``, ``raw/``): one sample as the original's Dataset
  returns it, read from the raw files by this project's readers and batch builder;
- ``step_parity.npz`` (``PROTOCOL_MANIFEST.json``): the original's training steps from fixed weights on
  fixed batches: losses, gradient norms, balancing weights, parameter changes, BatchNorm statistics.

Each case reports its worst comparison as the error and the tolerance it is held to (the fixtures'
READMEs state them); a case passes when every comparison is within its tolerance.
"""
from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from xtask.common.config import DatasetConfig, parse_dataset
from xtask.common.errors import XTaskError
from xtask.common.labels import cityscapes_lut
from xtask.common.methods import METHODS
from xtask.common.metrics import PaperMetrics
from xtask.common.prepared import to_stored
from xtask.data import cityscapes, nyu
from xtask.training.batches import Batch, batch_spec, loss_masks, to_batch
from xtask.training.engine import build_model
from xtask.training.hardware import resolve
from xtask.training.losses import loss_terms, task_losses
from xtask.training.model import XTaskOutput, convert_original_state_dict
from xtask.training.model.convert import original_key
from xtask.training.train import make_optimisation, train_step
from xtask.training.transforms import Draw

CLASSIC = ("model_parity", "loss_parity", "metric_parity")  # described by MANIFEST.json
PROTOCOL = ("data_parity", "step_parity")                   # described by PROTOCOL_MANIFEST.json
FORMATS = {"cs": "cityscapes", "nyu": "nyu"}


@dataclass(frozen=True)
class Comparison:
    what: str
    error: float
    tolerance: float
    stated: Optional[float] = None  # the fixture's own tolerance, where this machine's noise floor is wider

    @property
    def passed(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance


@dataclass(frozen=True)
class CaseResult:
    fixture: str
    prefix: str
    comparisons: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def worst(self) -> Comparison:
        """The comparison closest to (or furthest beyond) its tolerance."""
        def ratio(c: Comparison) -> float:
            if not math.isfinite(c.error):
                return math.inf
            return c.error / c.tolerance if c.tolerance > 0 else (math.inf if c.error > 0 else 0.0)
        return max(self.comparisons, key=ratio)

    def line(self) -> str:
        w = self.worst
        widened = [c for c in self.comparisons if c.stated is not None]
        note = ""
        if w.stated is not None:
            note = f" (stated {w.stated:.3g}, widened to this machine's rounding spread)"
        elif widened:
            note = f"; {len(widened)} later-step comparison(s) held to this machine's rounding spread"
        return (f"{'ok  ' if self.passed else 'FAIL'} {self.fixture} {self.prefix}: largest error {w.error:.3g} "
                f"({w.what}), tolerance {w.tolerance:.3g}{note}")


# ---- comparisons ------------------------------------------------------------------------------------

def _array(x) -> np.ndarray:
    return (x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64))


def rel_norm(what: str, got, want, tolerance: float) -> Comparison:
    """||a - b|| / ||b||."""
    a, b = _array(got), _array(want)
    if a.shape != b.shape:
        return Comparison(f"{what}: shape {a.shape} != {b.shape}", math.inf, tolerance)
    denom = np.linalg.norm(b)
    return Comparison(what, float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0)), tolerance)


def rel_max(what: str, got, want, tolerance: float) -> Comparison:
    """max |a - b| / max |b|."""
    a, b = _array(got), _array(want)
    if a.shape != b.shape:
        return Comparison(f"{what}: shape {a.shape} != {b.shape}", math.inf, tolerance)
    denom = np.abs(b).max() if b.size else 0.0
    return Comparison(what, float(np.abs(a - b).max() / (denom if denom > 0 else 1.0)) if b.size else 0.0, tolerance)


def exact(what: str, got, want) -> Comparison:
    """The fraction of elements that differ (tolerance 0)."""
    a, b = _array(got), _array(want)
    if a.shape != b.shape:
        return Comparison(f"{what}: shape {a.shape} != {b.shape}", math.inf, 0.0)
    return Comparison(what, float((a != b).mean()) if a.size else 0.0, 0.0)


# ---- shared helpers ---------------------------------------------------------------------------------

def seeded_weight(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The fixtures' rule for the original's weights (tests/reference/fixtures/README.md)."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{key}".encode()))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0)
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g) * (2 / int(np.prod(shape[1:]))) ** 0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g)
    return 0.1 * torch.randn(shape, generator=g)


def _config(name: str, fmt: str, **values: Any) -> DatasetConfig:
    """A dataset section for one fixture case: protocol original, the original's widths, fp32 on the CPU."""
    base = {"format": fmt, "input_path": "-", "height": 32, "width": 32, "epochs": 1, "use_pretrain": False,
            "batch_size": 2, "lr": 1e-4, "betas": [0.9, 0.99], "scheduler_step_size": 1, "scheduler_gamma": 0.5,
            "alpha": 0.01, "gamma": 0.01, "label_smoothing": 0.0, "lp": "L1", "tdep_loss": "L1", "tseg_loss": "cross",
            "batch_norm": False, "wider_ttnet": False, "uncertainty_weights": False, "gradnorm": False,
            "enc_layers": 18, "num_classes": 13 if fmt == "nyu" else 7, "protocol": "original", "decoder_width": 128,
            "ttnet_width": 64, "amp": "off", "device": "cpu", "channels_last": "off"}
    return parse_dataset(name, {**base, **values})


def _seeded_model(cfg: DatasetConfig, method: str, seed: int, keys: Optional[list[str]] = None) -> torch.nn.Module:
    """``cfg``'s network of ``method`` holding the original's seeded weights (keys: the original's
    state_dict names; by default the counterparts of this model's own)."""
    stl_task = None if METHODS[method].multi_task else METHODS[method].tasks[0]
    model = build_model(cfg, METHODS[method], pretrained=False)
    shapes = {original_key(k, stl_task): tuple(v.shape) for k, v in model.state_dict().items()}
    names = keys if keys is not None else list(shapes)
    missing = sorted(set(shapes) - set(names))
    if missing:
        raise XTaskError(f"the fixture's state_dict lacks {missing[:3]}: not the architecture of its configuration")
    state = {k: seeded_weight(k, shapes.get(k, ()), seed) for k in names}
    model.load_state_dict(convert_original_state_dict(state, stl_task))
    return model


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except Exception as err:  # a damaged download: say which file
        raise XTaskError(f"{path}: not a readable .npz fixture ({type(err).__name__})") from None


def _manifest(path: Path, section: str) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise XTaskError(f"{path}: missing or not valid JSON ({type(err).__name__})") from None
    if section not in manifest:
        raise XTaskError(f"{path}: no '{section}' section")
    return manifest[section]


# ---- the five fixture kinds -----------------------------------------------------------------------------

def model_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[CaseResult]:
    for prefix, c in sorted(manifest.items()):
        cfg = _config("model", "cityscapes", enc_layers=c["enc_layers"], num_classes=c["num_classes"],
                      batch_norm=c["batch_norm"], wider_ttnet=c["wider_ttnet"])
        model = _seeded_model(cfg, "xtask", c["weight_seed"]).eval()
        with torch.no_grad():
            out = model(torch.from_numpy(d[prefix + "input"]))
        yield CaseResult("model_parity", prefix, tuple(
            rel_norm(name, getattr(out, name), d[prefix + name], 1e-4)
            for name in ("seg", "seg_transferred", "depth", "depth_transferred")))


def loss_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[CaseResult]:
    for prefix, c in sorted(manifest.items()):
        t = lambda k: torch.from_numpy(d[prefix + k])  # noqa: E731
        out = XTaskOutput(t("seg"), t("depth"), t("seg_transferred"), t("depth_transferred"))
        seg_target = t("seg_target")
        seg_mask = (seg_target != c["ignore_index"]).unsqueeze(1) if c["with_seg_mask"] else None
        terms = loss_terms(out, seg_target, t("depth_target"), t("depth_mask"), seg_mask,
                           num_classes=c["num_classes"], ignore_index=c["ignore_index"],
                           label_smoothing=c["label_smoothing"], lp=c["lp"], tseg_loss=c["tseg_loss"],
                           tdep_loss="SSIM" if c["tdep_loss"] == "ssim" else c["tdep_loss"])
        label, image = task_losses(terms, alpha=c["alpha"], gamma=c["gamma"])
        if c["balance"] == "uncert":
            lv = t("log_vars")
            label = 0.5 * torch.exp(-lv[1]) * label + lv[1]
            image = 0.5 * torch.exp(-lv[0]) * image + lv[0]
        comparisons = [rel_norm(f"term_{n}", terms[n], d[prefix + "term_" + n], 1e-5)
                       for n in ("seg", "depth", "seg_transferred", "depth_transferred")]
        comparisons += [rel_norm("label_loss", label, d[prefix + "label_loss"], 1e-5),
                        rel_norm("image_loss", image, d[prefix + "image_loss"], 1e-5)]
        yield CaseResult("loss_parity", prefix, tuple(comparisons))


def metric_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[CaseResult]:
    for prefix, c in sorted(manifest.items()):
        m = PaperMetrics(c["num_classes"], c["ignore_index"])
        for b in range(len(c["batch_sizes"])):
            t = lambda k: torch.from_numpy(d[f"{prefix}b{b}_{k}"])  # noqa: E731
            m.update(t("seg_logits"), t("depth_pred"), t("seg_target"), t("depth_target"))
        got = m.compute()
        yield CaseResult("metric_parity", prefix, tuple(
            rel_norm(ours, got[ours], d[prefix + theirs], 1e-6)
            for ours, theirs in (("miou", "miou"), ("pix_acc", "pixel_acc"), ("abs_err", "abs"),
                                 ("rel_err", "abs_rel"))))


def _raw_sample(folder: Path, fmt: str, entry: dict) -> tuple[np.ndarray, ...]:
    """One sample as this project's reader and prepare stage store it (NYUv2 at its stored size, as the
    original reads it, unless the entry names one)."""
    if fmt == "cityscapes":
        h, w = entry["height"], entry["width"]
        root = folder / "raw" / "cityscapes"
        samples = {s.stem: s for s in cityscapes.list_samples(root, entry["split"])}
        if entry["stem"] not in samples:
            raise XTaskError(f"{root}: no sample {entry['stem']!r} in the {entry['split']} split")
        sample = cityscapes.read_sample(samples[entry["stem"]], lut=cityscapes_lut(entry["num_classes"]),
                                        height=h, width=w)
    else:
        root = folder / "raw" / "nyu"
        stored = np.load(root / entry["split"] / "label" / f"{entry['index']}.npy", mmap_mode="r").shape
        sample = nyu.read_sample(root, entry["split"], entry["index"], height=entry.get("height", stored[0]),
                                 width=entry.get("width", stored[1]))
    return to_stored(sample)


def data_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[CaseResult]:
    for fmt in ("cityscapes", "nyu"):
        for entry in manifest.get(fmt, []):
            prefix = entry["prefix"]
            image, label, depth = _raw_sample(folder, fmt, entry)
            cfg = _config("data", fmt, num_classes=entry.get("num_classes", 13 if fmt == "nyu" else 7),
                          height=label.shape[0], width=label.shape[1])
            raw = tuple(torch.from_numpy(a[None]) for a in (image, label, depth)) + ((0, 1),)
            draws = None if entry["augment"] is None else [Draw(**entry["augment"])]
            b = to_batch(raw, torch.device("cpu"), batch_spec(cfg), draws)
            tol = 1e-5  # max |a - b| <= 1e-5 x max |b| (the bilinear resize's float32 rounding)
            comparisons = [rel_max("image", b.image[0], d[prefix + "image"], tol),
                           exact("seg", b.seg[0], d[prefix + "seg"]),
                           rel_max("depth", b.depth[0], d[prefix + "depth"], tol)]
            if fmt == "cityscapes":
                comparisons += [exact("seg_mask", b.seg_mask[0].float(), d[prefix + "seg_mask"]),
                                exact("depth_mask", b.depth_mask[0].float(), d[prefix + "depth_mask"])]
            yield CaseResult("data_parity", prefix, tuple(comparisons))


def _step_config(c: dict) -> DatasetConfig:
    fmt = FORMATS[c["dataset"]]
    values = {k: c[k] for k in ("num_classes", "enc_layers", "lr", "height", "width") if k in c}
    values["batch_size"] = c["batch"]
    if c["method"] == "xtask":
        values.update({k: c[k] for k in ("batch_norm", "wider_ttnet", "alpha", "gamma", "label_smoothing", "lp",
                                         "tseg_loss", "tdep_loss")},
                      betas=list(c["betas"]), uncertainty_weights=c["balance"] == "uncert",
                      gradnorm=c["balance"] == "gradnorm")
    return _config("step", fmt, **values)


def _probe(model, x: torch.Tensor, method: str) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(x)
    if METHODS[method].multi_task:
        return {n: getattr(out, n) for n in ("seg", "seg_transferred", "depth", "depth_transferred")}
    return {"output": out.seg if out.seg is not None else out.depth}


# The thread counts a training-step case is run with: each is another summation order of the same
# computation. The fixtures' step cases start from random weights, with BatchNorm over a handful of
# values per channel in the deepest layers and Adam's first steps nearly sign(g) x lr, so the order
# alone moves the later steps by more than their stated tolerances; how far this machine's own runs
# differ among themselves is the noise floor a comparison can be held to (docs/parity.md).
STEP_THREADS = (1, 2)
SPREAD_FACTOR = 3.0


def _step_run(d: dict[str, np.ndarray], prefix: str, c: dict) -> dict[str, Any]:
    """The original's step function, as this project runs it, from the fixture's weights and batches:
    every quantity the fixture records."""
    cfg, method = _step_config(c), c["method"]
    stl_task = None if METHODS[method].multi_task else METHODS[method].tasks[0]
    model = _seeded_model(cfg, method, c["weight_seed"], [k for k, _ in c["state_dict"]])
    ours = {original_key(k, stl_task): k for k, _ in model.named_parameters()}
    params = dict(model.named_parameters())
    order = [params[ours[name]] for name in c["parameters"]]
    initial = [p.detach().clone() for p in order]
    probe = torch.from_numpy(d[prefix + "probe_input"])
    out: dict[str, Any] = {f"probe_before_{k}": v for k, v in _probe(model, probe, method).items()}
    hw = resolve(cfg, "cpu")
    balancer, optimizer, scaler = make_optimisation(cfg, METHODS[method], model, hw)
    grad_norms: list[list[float]] = []
    optimizer.register_step_pre_hook(lambda *_: grad_norms.append(
        [0.0 if p.grad is None else p.grad.double().norm().item() for p in order]))
    spec = batch_spec(cfg)
    losses, weights = [], []
    for step in range(c["steps"]):
        t = lambda k: torch.from_numpy(d[f"{prefix}b{step}_{k}"])  # noqa: E731
        seg, depth = t("seg"), t("depth")
        if f"{prefix}b{step}_seg_mask" in d:  # Cityscapes: the masks the original's loader handed over
            seg_mask, depth_mask = t("seg_mask").bool(), t("depth_mask").bool()
        else:
            seg_mask, depth_mask = loss_masks(spec, seg, depth)
        balancer.start_epoch(c.get("epochs_of_steps", [1] * c["steps"])[step])
        model.train()
        _, total = train_step(model, balancer, cfg, hw, Batch(t("image"), seg, depth, depth_mask, seg_mask),
                              optimizer, scaler, method=METHODS[method])
        losses.append(total.item())
        weights.append(_task_weights(balancer))
    by_original = {original_key(k, stl_task): v for k, v in model.state_dict().items()}
    out.update(loss=losses, grad_norm_first=grad_norms[0], grad_norm_later=grad_norms[1:], task_weights=weights,
               param_delta_norm=[(p.detach() - q).double().norm().item() for p, q in zip(order, initial)],
               running_mean_after=torch.cat([by_original[k].flatten() for k, _ in c["state_dict"]
                                             if k.endswith("running_mean")]))
    out.update({f"probe_after_{k}": v for k, v in _probe(model, probe, method).items()})
    return out


def _step_comparisons(run: dict[str, Any], d: dict[str, np.ndarray], prefix: str) -> list[Comparison]:
    """(name, ours, theirs, measure, stated tolerance) of every recorded quantity (protocol/README.md)."""
    want = {"loss": d[prefix + "loss"], "grad_norm_first": d[prefix + "grad_norm"][0],
            "grad_norm_later": d[prefix + "grad_norm"][1:], "param_delta_norm": d[prefix + "param_delta_norm"],
            "running_mean_after": d[prefix + "running_mean_after"]}
    if prefix + "task_weights" in d:
        want["task_weights"] = d[prefix + "task_weights"]
    stated = {"loss": 1e-4, "grad_norm_first": 1e-4, "grad_norm_later": 1e-2, "task_weights": 1e-4,
              "param_delta_norm": 1e-3, "running_mean_after": 1e-3}
    out = [rel_norm(k, run[k], v, stated[k]) for k, v in want.items() if np.asarray(v).size]
    for key in run:
        if key.startswith("probe_before_"):
            out.append(rel_norm(key, run[key], d[prefix + key], 1e-4))
        elif key.startswith("probe_after_"):
            out.append(rel_max(key, run[key], d[prefix + key], 2e-2))
    return out


def step_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[CaseResult]:
    """Each case run at every STEP_THREADS; compared, at the first, with the fixture within the stated
    tolerance, widened to SPREAD_FACTOR x the largest difference between this machine's own runs where
    that is larger (the noise floor of the comparison here)."""
    threads = torch.get_num_threads()
    try:
        for prefix, c in sorted(manifest.items()):
            runs = []
            for n in STEP_THREADS:
                torch.set_num_threads(n)
                runs.append(_step_run(d, prefix, c))
            comparisons = []
            for base in _step_comparisons(runs[0], d, prefix):
                spread = max((_step_spread(base.what, runs[0], other) for other in runs[1:]), default=0.0)
                if SPREAD_FACTOR * spread > base.tolerance:
                    base = Comparison(base.what, base.error, SPREAD_FACTOR * spread, stated=base.tolerance)
                comparisons.append(base)
            yield CaseResult("step_parity", prefix, tuple(comparisons))
    finally:
        torch.set_num_threads(threads)


def _step_spread(key: str, a: dict[str, Any], b: dict[str, Any]) -> float:
    """The difference between two of this machine's runs of a case, in the comparison's own measure."""
    measure = rel_max if key.startswith("probe_after_") else rel_norm
    return measure(key, a[key], b[key], 0.0).error


def _task_weights(balancer) -> list[float]:
    """The fixtures' balancing state after a step, [depth side, seg side]: the uncertainty
    log-variances, or the original GradNorm's renormalised weights; nothing for a single task."""
    if hasattr(balancer, "log_vars"):
        return balancer.log_vars.detach().tolist()
    if hasattr(balancer, "effective"):
        return balancer.effective().detach().tolist()
    return []


CHECKS: dict[str, Callable[[dict, dict, Path], Iterator[CaseResult]]] = {
    "model_parity": model_cases, "loss_parity": loss_cases, "metric_parity": metric_cases,
    "data_parity": data_cases, "step_parity": step_cases}


def fixture_files(folder: Path) -> list[Path]:
    """Every ``<kind>.npz`` fixture under ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*.npz") if p.stem in CHECKS)


def check_file(path: Path) -> Iterator[CaseResult]:
    kind = path.stem
    manifest_name = "MANIFEST.json" if kind in CLASSIC else "PROTOCOL_MANIFEST.json"
    manifest = _manifest(path.parent / manifest_name, kind)
    if kind == "data_parity" and not (path.parent / "raw").is_dir():
        raise XTaskError(f"{path.parent / 'raw'}: missing; data_parity.npz needs the raw datasets beside it")
    torch.manual_seed(0)  # nothing below should depend on it; this makes sure nothing can
    yield from CHECKS[kind](_npz(path), manifest, path.parent)


def check_folder(folder: Path) -> Iterator[CaseResult]:
    folder = Path(folder)
    if not folder.is_dir():
        raise XTaskError(f"{folder}: not a folder")
    files = fixture_files(folder)
    if not files:
        raise XTaskError(f"{folder}: no parity fixtures ({', '.join(f'{k}.npz' for k in CHECKS)}) found")
    for path in files:
        yield from check_file(path)


