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
  fixed batches, in float32: the first step is held to the stated tolerances; the later steps are
  reported, not judged (in float32 the summation order of another thread count or CPU moves them by
  percents, docs/parity.md);
- ``step_parity_f64.npz`` (``PROTOCOL_MANIFEST.json``): the same steps in float64, with more recorded
  (loss terms, Adam moments, GradNorm's internals); every recorded quantity of every step is held to
  the manifest's fixed tolerance.

Each case reports its worst judged comparison as the error and the tolerance it is held to (the
fixtures' READMEs state them; none comes from this installation's own spread); a case passes when every
judged comparison is within its tolerance. A case that cannot be built or run fails alone, with its
reason, and the other cases are still checked.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch

from xtask.common.cli import run
from xtask.common.config import CLASSES, OWNER, DatasetConfig, parse_dataset
from xtask.common.errors import XTaskError
from xtask.common.labels import cityscapes_lut
from xtask.common.methods import METHODS
from xtask.common.metrics import PaperMetrics
from xtask.common.prepared import to_stored
from xtask.core.batches import Batch, batch_spec, loss_masks, to_batch
from xtask.core.hardware import resolve
from xtask.core.model import XTaskOutput, build_model, convert_original_state_dict
from xtask.core.model.convert import original_key
from xtask.core.protocol import protocol_of
from xtask.core.transforms import Draw
from xtask.data import cityscapes, nyu
from xtask.training.float64 import float64_mode
from xtask.training.losses import LossSpec, loss_terms, task_losses
from xtask.training.run import TrainingRun

CLASSIC = ("model_parity", "loss_parity", "metric_parity")  # described by MANIFEST.json
FORMATS = {"cs": "cityscapes", "nyu": "nyu"}
WEIGHTING = {"none": "none", "uncert": "uncertainty", "gradnorm": "gradnorm"}  # the fixtures' names -> params'


@dataclass(frozen=True)
class Comparison:
    what: str
    error: float
    tolerance: float
    judged: bool = True  # False: reported only (float32 steps after the first)

    @property
    def passed(self) -> bool:
        return not self.judged or (math.isfinite(self.error) and self.error <= self.tolerance)

    @property
    def ratio(self) -> float:
        if not math.isfinite(self.error):
            return math.inf
        return self.error / self.tolerance if self.tolerance > 0 else (math.inf if self.error > 0 else 0.0)


@dataclass(frozen=True)
class CaseResult:
    fixture: str
    prefix: str
    comparisons: tuple[Comparison, ...] = ()
    error: Optional[str] = None  # the case could not be built or run: why

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def worst(self) -> Optional[Comparison]:
        """The judged comparison closest to (or furthest beyond) its tolerance."""
        judged = [c for c in self.comparisons if c.judged]
        return max(judged, key=lambda c: c.ratio) if judged else None

    def line(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        if self.error is not None:
            return f"{status} {self.fixture} {self.prefix}: could not be checked: {self.error}"
        w = self.worst
        if w is None:
            return f"{status} {self.fixture} {self.prefix}: nothing compared"
        text = (f"{status} {self.fixture} {self.prefix}: largest error {w.error:.3g} ({w.what}), "
                f"tolerance {w.tolerance:.3g}")
        reported = [c for c in self.comparisons if not c.judged]
        if reported:
            r = max(reported, key=lambda c: c.ratio)
            text += (f"; {len(reported)} later-step comparison(s) reported, not judged (largest {r.error:.3g} "
                     f"({r.what}) against a stated {r.tolerance:.3g})")
        return text


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
    f32 = torch.float32  # the rule's draws are float32 whatever the default dtype (float64 cases upcast them)
    if key.endswith("num_batches_tracked"):
        return torch.tensor(0)
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g, dtype=f32) * 0.1
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g, dtype=f32)
    if len(shape) >= 2:
        return torch.randn(shape, generator=g, dtype=f32) * (2 / int(np.prod(shape[1:]))) ** 0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=g, dtype=f32)
    return 0.1 * torch.randn(shape, generator=g, dtype=f32)


def _config(name: str, fmt: str, **values: Any) -> DatasetConfig:
    """A dataset section for one fixture case, keys by name (``OWNER`` says their sections): protocol original,
    the original's widths, fp32 on the CPU."""
    flat = {"format": fmt, "input_path": "-", "height": 32, "width": 32, "epochs": 1, "use_pretrain": False,
            "batch_size": 2, "lr": 1e-4, "betas": [0.9, 0.99], "scheduler_step_size": 1, "scheduler_gamma": 0.5,
            "alpha": 0.01, "gamma": 0.01, "label_smoothing": 0.0, "lp": "L1", "tdep_loss": "L1", "tseg_loss": "cross",
            "batch_norm": False, "wider_ttnet": False, "weighting": "none", "enc_layers": 18,
            "num_classes": 13 if fmt == "nyu" else 7, "decoder_width": 128, "ttnet_width": 64, "amp": "off",
            "device": "cpu", "channels_last": "off", **values}
    # the original's network takes any class count; params.yaml's choices (CLASSES) are the datasets' own
    num_classes, flat["num_classes"] = flat["num_classes"], CLASSES[fmt][0]
    raw: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        raw.setdefault(OWNER[key], {})[key] = value
    cfg = parse_dataset(name, raw)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, num_classes=num_classes))


def _seeded_model(cfg: DatasetConfig, method: str, seed: int, keys: Optional[list[str]] = None) -> torch.nn.Module:
    """``cfg``'s network of ``method`` holding the original's seeded weights (keys: the original's
    state_dict names; by default the counterparts of this model's own)."""
    stl_task = None if METHODS[method].multi_task else METHODS[method].tasks[0]
    model = build_model(cfg.model, cfg.data.num_classes, METHODS[method])
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


def _manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise XTaskError(f"{path}: missing or not valid JSON ({type(err).__name__})") from None


# ---- the fixture kinds: each yields (prefix, a function computing the case's comparisons) -----------------------------------------------------------------------------

def model_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    for prefix, c in sorted(manifest.items()):
        yield prefix, lambda prefix=prefix, c=c: _model_case(d, prefix, c)


def _model_case(d: dict[str, np.ndarray], prefix: str, c: dict) -> tuple[Comparison, ...]:
    cfg = _config("model", "cityscapes", enc_layers=c["enc_layers"], num_classes=c["num_classes"],
                  batch_norm=c["batch_norm"], wider_ttnet=c["wider_ttnet"])
    model = _seeded_model(cfg, "xtask", c["weight_seed"]).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(d[prefix + "input"]))
    return tuple(rel_norm(name, getattr(out, name), d[prefix + name], 1e-4)
                 for name in ("seg", "seg_transferred", "depth", "depth_transferred"))


def loss_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    for prefix, c in sorted(manifest.items()):
        yield prefix, lambda prefix=prefix, c=c: _loss_case(d, prefix, c)


def _loss_case(d: dict[str, np.ndarray], prefix: str, c: dict) -> list[Comparison]:
    t = lambda k: torch.from_numpy(d[prefix + k])  # noqa: E731
    out = XTaskOutput(t("seg"), t("depth"), t("seg_transferred"), t("depth_transferred"))
    seg_target = t("seg_target")
    seg_mask = (seg_target != c["ignore_index"]).unsqueeze(1) if c["with_seg_mask"] else None
    targets = Batch(None, seg_target, t("depth_target"), t("depth_mask"), seg_mask)
    spec = LossSpec(c["num_classes"], c["ignore_index"], c["label_smoothing"], c["lp"], c["tseg_loss"],
                    "SSIM" if c["tdep_loss"] == "ssim" else c["tdep_loss"])
    terms = loss_terms(out, targets, spec)
    label, image = task_losses(terms, alpha=c["alpha"], gamma=c["gamma"])
    if c["balance"] == "uncert":
        lv = t("log_vars")
        label = 0.5 * torch.exp(-lv[1]) * label + lv[1]
        image = 0.5 * torch.exp(-lv[0]) * image + lv[0]
    comparisons = [rel_norm(f"term_{n}", terms[n], d[prefix + "term_" + n], 1e-5)
                   for n in ("seg", "depth", "seg_transferred", "depth_transferred")]
    comparisons += [rel_norm("label_loss", label, d[prefix + "label_loss"], 1e-5),
                    rel_norm("image_loss", image, d[prefix + "image_loss"], 1e-5)]
    return comparisons


def metric_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    for prefix, c in sorted(manifest.items()):
        yield prefix, lambda prefix=prefix, c=c: _metric_case(d, prefix, c)


def _metric_case(d: dict[str, np.ndarray], prefix: str, c: dict) -> tuple[Comparison, ...]:
    m = PaperMetrics(c["num_classes"], c["ignore_index"])
    for b in range(len(c["batch_sizes"])):
        t = lambda k: torch.from_numpy(d[f"{prefix}b{b}_{k}"])  # noqa: E731
        m.update(t("seg_logits"), t("depth_pred"), t("seg_target"), t("depth_target"))
    got = m.compute()
    return tuple(rel_norm(ours, got[ours], d[prefix + theirs], 1e-6)
                 for ours, theirs in (("miou", "miou"), ("pix_acc", "pixel_acc"), ("abs_err", "abs"),
                                      ("rel_err", "abs_rel")))


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


def data_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    for fmt in ("cityscapes", "nyu"):
        for entry in manifest.get(fmt, []):
            yield entry["prefix"], lambda fmt=fmt, entry=entry: _data_case(d, folder, fmt, entry)


def _data_case(d: dict[str, np.ndarray], folder: Path, fmt: str, entry: dict) -> list[Comparison]:
    prefix = entry["prefix"]
    image, label, depth = _raw_sample(folder, fmt, entry)
    cfg = _config("data", fmt, num_classes=entry.get("num_classes", 13 if fmt == "nyu" else 7),
                  height=label.shape[0], width=label.shape[1])
    raw = tuple(torch.from_numpy(a[None]) for a in (image, label, depth)) + ((0, 1),)
    draws = None if entry["augment"] is None else [Draw(**entry["augment"])]
    b = to_batch(raw, torch.device("cpu"), batch_spec(cfg.data, protocol_of(cfg.protocol)), draws)
    tol = 1e-5  # max |a - b| <= 1e-5 x max |b| (the bilinear resize's float32 rounding)
    comparisons = [rel_max("image", b.image[0], d[prefix + "image"], tol),
                   exact("seg", b.seg[0], d[prefix + "seg"]),
                   rel_max("depth", b.depth[0], d[prefix + "depth"], tol)]
    if fmt == "cityscapes":
        comparisons += [exact("seg_mask", b.seg_mask[0].float(), d[prefix + "seg_mask"]),
                        exact("depth_mask", b.depth_mask[0].float(), d[prefix + "depth_mask"])]
    return comparisons


def _step_config(c: dict) -> DatasetConfig:
    fmt = FORMATS[c["dataset"]]
    values = {k: c[k] for k in ("num_classes", "enc_layers", "lr", "height", "width") if k in c}
    values["batch_size"] = c["batch"]
    if c["method"] == "xtask":
        values.update({k: c[k] for k in ("batch_norm", "wider_ttnet", "alpha", "gamma", "label_smoothing", "lp",
                                         "tseg_loss", "tdep_loss")},
                      betas=list(c["betas"]), weighting=WEIGHTING[c["balance"]])
    return _config("step", fmt, **values)


def _probe(model, x: torch.Tensor, method: str) -> dict[str, torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(x)
    if METHODS[method].multi_task:
        return {n: getattr(out, n) for n in ("seg", "seg_transferred", "depth", "depth_transferred")}
    return {"output": out.seg if out.seg is not None else out.depth}


def _weights_sha256(state: dict[str, torch.Tensor], keys: Iterable[str]) -> str:
    """The fixtures' digest of the seeded initial weights: every tensor's bytes (floats as float32, the
    BatchNorm counters as int64), C order, in state_dict order."""
    h = hashlib.sha256()
    for k in keys:
        t = state[k]
        h.update((t.to(torch.float32) if t.is_floating_point() else t).contiguous().numpy().tobytes())
    return h.hexdigest()


def _norms(tensors: Iterable[Optional[torch.Tensor]]) -> list[float]:
    return [0.0 if t is None else t.detach().double().norm().item() for t in tensors]


def _step_run(d: dict[str, np.ndarray], prefix: str, c: dict) -> dict[str, Any]:
    """The original's step function, as this project runs it (``train_step``), from the fixture's weights
    and batches, in the fixture's dtype: every quantity either step fixture records, per step."""
    cfg, method = _step_config(c), c["method"]
    stl_task = None if METHODS[method].multi_task else METHODS[method].tasks[0]
    keys = [k for k, _ in c["state_dict"]]
    model = _seeded_model(cfg, method, c["weight_seed"], keys)
    by_original = {original_key(k, stl_task): v for k, v in model.state_dict().items()}
    if "initial_weights_sha256" in c and _weights_sha256(by_original, keys) != c["initial_weights_sha256"]:
        raise XTaskError("the seeded initial weights are not the fixture's (initial_weights_sha256): torch.randn "
                         "draws other values with this CPU's kernels")
    ours = {original_key(k, stl_task): k for k, _ in model.named_parameters()}
    params = dict(model.named_parameters())
    order = [params[ours[name]] for name in c["parameters"]]
    initial = [p.detach().clone() for p in order]
    running_means = [k for k in keys if k.endswith("running_mean")]
    dtype = next(iter(params.values())).dtype
    probe = torch.from_numpy(d[prefix + "probe_input"]).to(dtype)
    out: dict[str, Any] = {f"probe_before_{k}": v for k, v in _probe(model, probe, method).items()}
    run = TrainingRun(cfg, METHODS[method], resolve(cfg.runtime, cfg.protocol, "cpu"), model=model)
    balancer, optimizer, spec = run.balancer, run.optimizer, run.spec
    if "l0" in c:  # a GradNorm case entered after epoch 1: the L0 the original's loop holds by then
        balancer.set_initial_losses(torch.tensor(c["l0"], dtype=dtype))
    grad_norms: list[list[float]] = []
    optimizer.register_step_pre_hook(lambda *_: grad_norms.append(_norms(p.grad for p in order)))
    rows: dict[str, list] = {k: [] for k in (
        "loss", "task_weights", "loss_terms", "task_losses", "param_step_norm", "running_mean", "adam_exp_avg_norm",
        "adam_exp_avg_sq_norm", "balance_grad", "balance_adam_exp_avg", "balance_adam_exp_avg_sq",
        *(f"gradnorm_{k}" for k in ("grad_norms", "targets", "loss_ratios", "l0", "lgrad", "weights_raw")))}
    for step in range(c["steps"]):
        t = lambda k: torch.from_numpy(d[f"{prefix}b{step}_{k}"])  # noqa: E731
        image = t("image").to(dtype)
        seg, depth = t("seg"), t("depth").to(dtype)
        if f"{prefix}b{step}_seg_mask" in d:  # Cityscapes: the masks the original's loader handed over
            seg_mask, depth_mask = t("seg_mask").bool(), t("depth_mask").bool()
        else:
            seg_mask, depth_mask = loss_masks(spec, seg, depth)
        balancer.start_epoch(c.get("epochs_of_steps", [1] * c["steps"])[step])
        log_vars = getattr(balancer, "log_vars", None)
        log_vars_before = None if log_vars is None else log_vars.detach().clone()
        before = [p.detach().clone() for p in order]
        model.train()
        terms, total = run.train_step(Batch(image, seg, depth, depth_mask, seg_mask))
        rows["loss"].append(total.item())
        rows["task_weights"].append(_task_weights(balancer))
        if METHODS[method].transfer:
            rows["loss_terms"].append([terms[k].item() for k in ("seg", "depth", "seg_transferred",
                                                                  "depth_transferred")])
            label, image_loss = run.objective.combine(terms)
            if log_vars_before is not None:  # XTaskLoss returns them uncertainty-weighted
                image_loss = 0.5 * torch.exp(-log_vars_before[0]) * image_loss + log_vars_before[0]
                label = 0.5 * torch.exp(-log_vars_before[1]) * label + log_vars_before[1]
            rows["task_losses"].append([image_loss.item(), label.item()])
        rows["param_step_norm"].append([(p.detach() - q).double().norm().item() for p, q in zip(order, before)])
        state = {original_key(k, stl_task): v for k, v in model.state_dict().items()}
        rows["running_mean"].append(torch.cat([state[k].flatten() for k in running_means]).tolist())
        rows["adam_exp_avg_norm"].append(_norms(optimizer.state[p].get("exp_avg") for p in order))
        rows["adam_exp_avg_sq_norm"].append(_norms(optimizer.state[p].get("exp_avg_sq") for p in order))
        weights, weights_optimizer = _balance_parameter(balancer, optimizer)
        if weights is not None:
            rows["balance_grad"].append(weights.grad.tolist())
            rows["balance_adam_exp_avg"].append(weights_optimizer.state[weights]["exp_avg"].tolist())
            rows["balance_adam_exp_avg_sq"].append(weights_optimizer.state[weights]["exp_avg_sq"].tolist())
        for k, v in getattr(balancer, "last", {}).items():
            rows[f"gradnorm_{k}"].append(v.tolist())
    by_original = {original_key(k, stl_task): v for k, v in model.state_dict().items()}
    out.update({k: v for k, v in rows.items() if v}, grad_norm=grad_norms,
               param_delta_norm=[(p.detach() - q).double().norm().item() for p, q in zip(order, initial)],
               running_mean_after=torch.cat([by_original[k].flatten() for k in running_means]))
    out.update({f"probe_after_{k}": v for k, v in _probe(model, probe, method).items()})
    return out


def _balance_parameter(balancer, optimizer) -> tuple[Optional[torch.nn.Parameter], Any]:
    """(the balancing weights, the optimiser that steps them): uncertainty log-variances in the model's
    Adam, the original GradNorm's raw weights in their own; (None, None) without balancing weights."""
    if hasattr(balancer, "log_vars"):
        return balancer.log_vars, optimizer
    if hasattr(balancer, "raw"):
        return balancer.raw, balancer.own_optimizer
    return None, None


def _task_weights(balancer) -> list[float]:
    """The fixtures' balancing state after a step, [depth side, seg side]: the uncertainty
    log-variances, or the original GradNorm's renormalised weights; nothing for a single task."""
    if hasattr(balancer, "log_vars"):
        return balancer.log_vars.detach().tolist()
    if hasattr(balancer, "effective"):
        return balancer.effective().detach().tolist()
    return []


def _per_step(what: str, got, want, tolerance: float, judged: bool = True) -> Comparison:
    """The largest over the steps of each step's row ||a - b|| / ||b|| (absolute where ||b|| = 0)."""
    a, b = _array(got), _array(want)
    if a.shape != b.shape:
        return Comparison(f"{what}: shape {a.shape} != {b.shape}", math.inf, tolerance, judged)
    worst, at = 0.0, 0
    for s in range(b.shape[0]):
        denom = np.linalg.norm(b[s])
        err = float(np.linalg.norm(a[s] - b[s]) / (denom if denom > 0 else 1.0))
        if not err <= worst:  # NaN counts as the worst
            worst, at = err, s
    return Comparison(f"{what}, step {at + 1}" if b.shape[0] > 1 else what, worst, tolerance, judged)


# The float32 fixture's stated tolerances (protocol/README.md), for the first step; later steps reported.
F32_STATED = {"loss": 1e-4, "grad_norm": 1e-4, "task_weights": 1e-4, "probe_before": 1e-4}
F32_LATER = {"loss": 1e-4, "grad_norm": 1e-2, "task_weights": 1e-4, "param_delta_norm": 1e-3,
             "running_mean_after": 1e-3, "probe_after": 2e-2}


def _step_case(d: dict[str, np.ndarray], prefix: str, c: dict) -> tuple[Comparison, ...]:
    """A float32 step case: step 1 (and the outputs before training) judged, what follows reported."""
    run = _step_run(d, prefix, c)
    out = []
    for key in ("loss", "grad_norm", "task_weights"):
        want = d.get(prefix + key)
        if want is None or not want.size:
            continue
        got = np.asarray(run[key], dtype=np.float64)
        if got.shape != want.shape:
            out.append(Comparison(f"{key}: shape {got.shape} != {want.shape}", math.inf, F32_STATED[key]))
            continue
        out.append(_per_step(key, got[:1], want[:1], F32_STATED[key]))
        if want.shape[0] > 1:
            out.append(_per_step(key, got[1:], want[1:], F32_LATER[key], judged=False))
    for key in ("param_delta_norm", "running_mean_after"):
        out.append(_judged(rel_norm(key, run[key], d[prefix + key], F32_LATER[key]), False))
    for key in run:
        if key.startswith("probe_before_"):
            out.append(rel_norm(key, run[key], d[prefix + key], F32_STATED["probe_before"]))
        elif key.startswith("probe_after_"):
            out.append(_judged(rel_max(key, run[key], d[prefix + key], F32_LATER["probe_after"]), False))
    return tuple(out)


def _judged(c: Comparison, judged: bool) -> Comparison:
    return Comparison(c.what, c.error, c.tolerance, judged)


def _step_case_f64(d: dict[str, np.ndarray], prefix: str, c: dict, tolerances: dict) -> tuple[Comparison, ...]:
    """A float64 step case, run in float64: every recorded result of every step within the manifest's
    one fixed tolerance."""
    tol = float(tolerances["every result"])
    per_step = set(tolerances["per_step"])
    with float64_mode():
        run = _step_run(d, prefix, c)
    recorded = sorted(k[len(prefix):] for k in d if k.startswith(prefix) and not k[len(prefix):].startswith("b")
                      and k[len(prefix):] != "probe_input")
    out = []
    for key in recorded:
        if key not in run:
            out.append(Comparison(f"{key}: not computed here", math.inf, tol))
        elif key in per_step:
            want = d[prefix + key]
            out.append(_per_step(key, np.asarray(run[key], dtype=np.float64).reshape(want.shape[0], -1),
                                 want.reshape(want.shape[0], -1), tol))
        else:
            out.append(rel_norm(key, run[key], d[prefix + key], tol))
    return tuple(out)


Case = tuple[str, Callable[[], Iterable[Comparison]]]


def step_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    for prefix, c in sorted(manifest["step_parity"].items()):
        yield prefix, lambda prefix=prefix, c=c: _step_case(d, prefix, c)


def step_f64_cases(d: dict[str, np.ndarray], manifest: dict, folder: Path) -> Iterator[Case]:
    tolerances = manifest["tolerances"]["step_parity_f64"]
    for prefix, c in sorted(manifest["step_parity_f64"].items()):
        yield prefix, lambda prefix=prefix, c=c: _step_case_f64(d, prefix, c, tolerances)


CHECKS: dict[str, Callable[[dict, dict, Path], Iterator[Case]]] = {
    "model_parity": model_cases, "loss_parity": loss_cases, "metric_parity": metric_cases,
    "data_parity": data_cases, "step_parity": step_cases, "step_parity_f64": step_f64_cases}


def fixture_files(folder: Path) -> list[Path]:
    """Every ``<kind>.npz`` fixture under ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*.npz") if p.stem in CHECKS)


def _reason(err: BaseException) -> str:
    return str(err) if isinstance(err, XTaskError) else f"{type(err).__name__}: {err}"


def check_file(path: Path) -> Iterator[CaseResult]:
    """The file's cases, one result each; a file that cannot be read is one failed result."""
    kind = path.stem
    try:
        if kind in CLASSIC:
            manifest = _manifest(path.parent / "MANIFEST.json")[kind]
        else:
            manifest = _manifest(path.parent / "PROTOCOL_MANIFEST.json")
            if kind not in manifest:
                raise XTaskError(f"{path.parent / 'PROTOCOL_MANIFEST.json'}: no '{kind}' section")
            if kind != "data_parity":
                manifest = {kind: manifest[kind], "tolerances": manifest.get("tolerances", {})}
            else:
                manifest = manifest[kind]
        if kind == "data_parity" and not (path.parent / "raw").is_dir():
            raise XTaskError(f"{path.parent / 'raw'}: missing; data_parity.npz needs the raw datasets beside it")
        arrays = _npz(path)
        cases = list(CHECKS[kind](arrays, manifest, path.parent))
    except Exception as err:  # noqa: BLE001 - the file fails alone, the other files are still checked
        yield CaseResult(kind, "(file)", error=_reason(err))
        return
    for prefix, compare in cases:
        torch.manual_seed(0)  # nothing below should depend on it; this makes sure nothing can
        try:
            yield CaseResult(kind, prefix, tuple(compare()))
        except Exception as err:  # noqa: BLE001 - the case fails alone, with its reason
            yield CaseResult(kind, prefix, error=_reason(err))


def check_folder(folder: Path) -> Iterator[CaseResult]:
    folder = Path(folder)
    if not folder.is_dir():
        raise XTaskError(f"{folder}: not a folder")
    files = fixture_files(folder)
    if not files:
        raise XTaskError(f"{folder}: no parity fixtures ({', '.join(f'{k}.npz' for k in CHECKS)}) found")
    for path in files:
        yield from check_file(path)


USAGE = """Check this installation against a folder of parity fixtures computed by the original xtask_mt code
(model, loss, metric, data and training-step parity; see xtask/tools/parity.py): one line per case with
its largest error and its tolerance (the fixtures' own, never widened); a case that cannot run fails
alone with its reason; exit 1 if a case fails or the folder holds no fixture.

    python -m xtask.tools.parity tests/reference/fixtures

It computes in one CPU thread, as the fixtures were made. The float32 training-step cases are judged at
their first step only (rounding moves the later ones by percents, docs/parity.md); the float64 cases run
in float64 and hold every step to the manifest's fixed tolerance.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder of *_parity.npz fixtures (searched recursively)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"parity: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels", flush=True)
    failed = total = 0
    for case in check_folder(args.folder):
        total += 1
        failed += not case.passed
        print(case.line(), flush=True)
    if failed:
        raise XTaskError(f"{failed} of {total} parity cases in {args.folder} fail: this installation does not "
                         "compute what the original computed")
    print(f"parity: all {total} cases in {args.folder} within their tolerances")
    sys.stdout.flush()


if __name__ == "__main__":
    run(main)
