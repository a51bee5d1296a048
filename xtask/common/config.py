"""params.yaml -> typed, validated configuration, built once per stage.

Each dataset section nests one section per concern (data, model, init, loss, optim, balancing, protocol,
runtime; generate for the synthetic set), each a frozen dataclass whose fields say how their key is checked;
functions take the section they use. Every key is checked: unknown keys (typos), wrong types and values
outside their choices are reported as one line naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from ruamel.yaml import YAML, YAMLError

from xtask.common.errors import XTaskError
from xtask.common.labels import IGNORE_INDEX
from xtask.common.methods import METHODS

FORMATS = ("cityscapes", "nyu")
DEVICES = ("auto", "cpu", "cuda")
AMP = ("auto", "off", "bf16", "fp16")
SWITCH = ("auto", "on", "off")
CLASSES = {"cityscapes": (7, 19), "nyu": (13,)}
# The choice lists params.yaml may hold; the code that implements each choice imports them from here.
ENC_LAYERS = (18, 34, 50, 101, 152)
PROTOCOLS = ("original", "corrected")  # what each one does: xtask/core/protocol.py
# The corrections ``protocol: corrected`` makes, each one a switch of xtask/core/protocol.py's Protocol;
# ``corrections`` adds some of them to ``protocol: original`` (to measure what each defect costs).
CORRECTIONS = ("rescale_inverse_depth", "aligned_masks", "mask_missing_depth",
               "normalise_nyu_input", "stl_dataset_betas", "clean_gradnorm", "per_pixel_kl", "image_weighted_val_loss")
LP_LOSSES = ("L1", "MSE", "logL1", "smoothL1")
TSEG_LOSSES = ("cross", "kl")
TDEP_LOSSES = ("L1", "SSIM")
WHERE = ("host", "docker", "slurm")
TOP_LEVEL = ("run", "seeds", "methods", "launch")
WEIGHTINGS = ("none", "uncertainty", "gradnorm")  # what each one does: xtask/training/balancing.py

# sbatch options the sweep sets itself (xtask/runtime/slurm.py); one of them in launch.slurm.sbatch would
# change how tasks are numbered, logged, signalled or requeued behind the sweep's back
SWEEP_SBATCH = ("--array", "--output", "--error", "--signal", "--requeue", "--no-requeue", "--gres", "--job-name",
                "--parsable", "--wrap", "--wait", "--export", "--chdir", "--open-mode", "-a", "-o", "-e", "-J", "-W", "-D")




def _fail(key: str, expected: str, got: Any) -> XTaskError:
    return XTaskError(f"params.yaml: {key}: expected {expected}, got {got!r}")


def _int(key, v, lo=None, hi=None, multiple=None):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(key, "an integer", v)
    if lo is not None and v < lo:
        raise _fail(key, f"an integer >= {lo}", v)
    if hi is not None and v > hi:
        raise _fail(key, f"an integer <= {hi}", v)
    if multiple and v % multiple:
        raise _fail(key, f"a multiple of {multiple} (the encoder downsamples 32x)", v)
    return v


def _float(key, v, lo=None, hi=None, lo_open=False, hi_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(key, "a number", v)
    v = float(v)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise _fail(key, f"a number {'>' if lo_open else '>='} {lo}", v)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise _fail(key, f"a number {'<' if hi_open else '<='} {hi}", v)
    return v


def _bool(key, v):
    if not isinstance(v, bool):
        raise _fail(key, "true or false", v)
    return v


def _choice(key, v, choices):
    if isinstance(v, bool) and ("on" if v else "off") in choices:
        # true/false where on/off are the choices: what a YAML 1.1 writer (PyYAML) makes of a bare on/off
        v = "on" if v else "off"
    if v not in choices:
        raise _fail(key, f"one of {list(choices)}", v)
    return v


def _str(key, v):
    if not isinstance(v, str) or not v:
        raise _fail(key, "a non-empty string", v)
    return v


def _optional_str(key, v):
    return None if v is None else _str(key, v)


def _betas(key, v):
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise _fail(key, "a list of two numbers in [0, 1)", v)
    return tuple(_float(key, b, lo=0, hi=1, hi_open=True) for b in v)


def _unique_choices(key, v, choices):
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)) or len(set(v)) != len(v):
        raise _fail(key, f"a list without repeats of {list(choices)}", v)
    for c in v:
        _choice(key, c, choices)
    return tuple(v)


def _tdep(key, v):
    return _choice(key, "SSIM" if v == "ssim" else v, TDEP_LOSSES)  # "ssim": the original's spelling


def _sbatch(key, options):
    if not isinstance(options, (list, tuple)):
        raise _fail(key, "a list of sbatch options such as --time=1-00:00:00", options)
    for opt in options:
        if not isinstance(opt, str) or not opt.startswith("-") or " " in opt.split("=", 1)[0]:
            raise _fail(key, "options written as --name=value (one list item each)", opt)
        if opt.split("=", 1)[0] in SWEEP_SBATCH:
            raise _fail(key, f"no option the sweep sets itself ({', '.join(SWEEP_SBATCH[:10])})", opt)
    return tuple(options)


def check(rule: Callable[..., Any], **bounds: Any) -> dict[str, Any]:
    """A field's metadata: how its params value is validated (``rule(key, value, **bounds)``)."""
    return {"check": lambda key, v: rule(key, v, **bounds)}


def section(cls: type) -> dict[str, Any]:
    """A field's metadata: the field is a nested section of type ``cls``."""
    return {"section": cls}


def opt(default: Any, rule: Callable[..., Any], **bounds: Any) -> Any:
    """An optional key with its default."""
    return field(default=default, metadata=check(rule, **bounds))


def req(rule: Callable[..., Any], **bounds: Any) -> Any:
    """A required key."""
    return field(metadata=check(rule, **bounds))


@dataclass(frozen=True)
class GenerateConfig:
    """``<dataset>.generate``: the synthetic dataset's generator (the generate stage)."""
    seed: int = opt(0, _int, lo=0)
    n_train: int = opt(320, _int, lo=1)
    n_val: int = opt(80, _int, lo=1)
    height: int = opt(128, _int, lo=32)
    width: int = opt(256, _int, lo=32)


@dataclass(frozen=True)
class DataConfig:
    """``<dataset>.data``: where the raw data is and how the prepare stage stores it."""
    format: str = req(_choice, choices=FORMATS)
    input_path: str = req(_str)
    height: int = req(_int, lo=32, multiple=32)
    width: int = req(_int, lo=32, multiple=32)
    num_classes: int = req(_int, lo=1)  # one of CLASSES[format], checked in parse_dataset
    expect_full_size: bool = opt(False, _bool)

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX[self.format]


@dataclass(frozen=True)
class ModelConfig:
    """``<dataset>.model``: the network's shape (with ``data.num_classes``); a checkpoint must agree on all of it."""
    enc_layers: int = req(_choice, choices=ENC_LAYERS)
    batch_norm: bool = req(_bool)
    wider_ttnet: bool = req(_bool)
    decoder_width: int = opt(128, _int, lo=1)
    ttnet_width: int = opt(64, _int, lo=1)


@dataclass(frozen=True)
class InitConfig:
    """``<dataset>.init``: where the encoder's weights start from (training only)."""
    use_pretrain: bool = opt(False, _bool)
    pretrained_path: Optional[str] = opt(None, _optional_str)


@dataclass(frozen=True)
class LossConfig:
    """``<dataset>.loss``: the loss terms and their weights."""
    alpha: float = req(_float, lo=0, hi=1)
    gamma: float = req(_float, lo=0, hi=1)
    label_smoothing: float = req(_float, lo=0, hi=1, hi_open=True)
    lp: str = req(_choice, choices=LP_LOSSES)
    tdep_loss: str = req(_tdep)
    tseg_loss: str = req(_choice, choices=TSEG_LOSSES)


@dataclass(frozen=True)
class OptimConfig:
    """``<dataset>.optim``: Adam, its StepLR schedule (stepped per epoch), epochs and batch size."""
    epochs: int = req(_int, lo=1)
    batch_size: int = req(_int, lo=1)
    lr: float = req(_float, lo=0, lo_open=True)
    betas: tuple[float, float] = req(_betas)
    scheduler_step_size: int = req(_int, lo=1)
    scheduler_gamma: float = req(_float, lo=0, hi=1, lo_open=True)


@dataclass(frozen=True)
class BalancingConfig:
    """``<dataset>.balancing``: how the task losses are weighted (xtask/training/balancing.py)."""
    weighting: str = opt("none", _choice, choices=WEIGHTINGS)
    gradnorm_alpha: float = opt(1.5, _float, lo=0)


@dataclass(frozen=True)
class ProtocolConfig:
    """``<dataset>.protocol``: what a run computes: the original's training or corrections (docs/protocol.md),
    in which precision."""
    name: str = opt("original", _choice, choices=PROTOCOLS)
    corrections: tuple[str, ...] = opt((), _unique_choices, choices=CORRECTIONS)
    amp: str = opt("auto", _choice, choices=AMP)
    tf32: bool = opt(False, _bool)


@dataclass(frozen=True)
class RuntimeConfig:
    """``<dataset>.runtime``: where and how fast a run goes, never what it computes (up to kernel rounding): no
    stage depends on it, and a stopped run may resume under other values."""
    workers: int = opt(0, _int, lo=0)
    device: str = opt("auto", _choice, choices=DEVICES)
    channels_last: str = opt("auto", _choice, choices=SWITCH)
    compile: bool = opt(False, _bool)
    deterministic: bool = opt(False, _bool)


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset's section of params.yaml, one nested section per concern. The original README's flags
    keep their names inside the sections (docs/params.md)."""
    name: str
    data: DataConfig = field(metadata=section(DataConfig))
    model: ModelConfig = field(metadata=section(ModelConfig))
    loss: LossConfig = field(metadata=section(LossConfig))
    optim: OptimConfig = field(metadata=section(OptimConfig))
    init: InitConfig = field(default_factory=InitConfig, metadata=section(InitConfig))
    balancing: BalancingConfig = field(default_factory=BalancingConfig, metadata=section(BalancingConfig))
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig, metadata=section(ProtocolConfig))
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig, metadata=section(RuntimeConfig))
    generate: Optional[GenerateConfig] = field(default=None, metadata=section(GenerateConfig))

    def sections(self, names: Iterable[str]) -> dict[str, Any]:
        """The named sections as plain values."""
        return {n: dataclasses.asdict(getattr(self, n)) for n in names}


# The sections that decide a trained model, besides the prepared data (whose metadata stands for
# ``data``), the method, the seed and the code: the train stage's params in dvc.yaml, and what a resumable
# state and a metrics file's config_id are keyed by. ``runtime`` is nobody's dependency.
TRAINED = ("model", "init", "loss", "optim", "balancing", "protocol")


@dataclass(frozen=True)
class SlurmConfig:
    """How ``python -m xtask.tools.sweep`` submits the table to SLURM (section ``launch.slurm``; docs/slurm.md).
    Read by the sweep tool only: no stage depends on it."""
    gres: str = opt("gpu:1", _str)            # each array task's --gres (one task = one dataset x method x seed)
    sbatch: tuple[str, ...] = opt((), _sbatch)  # further sbatch options, as written (--partition=gpu, --time=1-0)
    dir: str = opt("sweeps", _str)            # per-task checkouts, logs and status; on a filesystem every node sees
    git_remote: str = opt("origin", _str)     # the git remote tasks clone from and push their experiments to
    stop_before_limit_s: int = opt(600, _int, lo=60)  # SIGUSR1 this long before the time limit: save, then requeue


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how the train stage runs (section ``launch``); none of it changes the protocol except
    ``nproc_per_node``, which splits each batch over that many processes (DDP)."""
    where: str = opt("host", _choice, choices=WHERE)  # host | docker: train in the image, DVC on the host | slurm
    image: str = opt("xtask:latest", _str)            # the image ``where: docker`` runs (built from the Dockerfile)
    nproc_per_node: int = opt(1, _int, lo=1)          # > 1: torchrun with that many processes (one per GPU)
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata=section(SlurmConfig))


@dataclass(frozen=True)
class Params:
    run: tuple[str, ...]
    seeds: tuple[int, ...]
    datasets: dict[str, DatasetConfig] = field(default_factory=dict)
    methods: tuple[str, ...] = ("xtask",)
    launch: LaunchConfig = field(default_factory=LaunchConfig)

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise XTaskError(f"params.yaml: no dataset section {name!r} (sections: {sorted(self.datasets)})")
        return self.datasets[name]


def _check_keys(where: str, raw: dict, allowed: list[str], required: list[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise XTaskError(f"params.yaml: {where}.{key}: unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in raw:
            raise XTaskError(f"params.yaml: {where}.{key}: missing (required key)")


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def parse_section(cls: type, where: str, raw: Any, **fixed: Any) -> Any:
    """Section ``where`` of type ``cls`` from its params values: every key checked by its field's rule;
    ``fixed``: fields that are not params keys."""
    fields = [f for f in dataclasses.fields(cls) if f.metadata]
    names = [f.name for f in fields]
    if not isinstance(raw, dict):
        raise _fail(where, f"a mapping with keys {', '.join(names)}", raw)
    _check_keys(where, raw, names, [f.name for f in fields if _required(f)])
    values = {}
    for f in fields:
        if f.name in raw:
            key = f"{where}.{f.name}"
            nested = f.metadata.get("section")
            values[f.name] = (None if raw[f.name] is None and not _required(f) else parse_section(nested, key, raw[f.name])
                              ) if nested else f.metadata["check"](key, raw[f.name])
    return cls(**fixed, **values)


def parse_dataset(name: str, raw: Any) -> DatasetConfig:
    cfg = parse_section(DatasetConfig, name, raw, name=name)
    if cfg.data.num_classes not in CLASSES[cfg.data.format]:
        raise _fail(f"{name}.data.num_classes", f"one of {list(CLASSES[cfg.data.format])}", cfg.data.num_classes)
    if cfg.protocol.corrections and cfg.protocol.name != "original":
        raise _fail(f"{name}.protocol.corrections", "[] unless protocol.name is original (corrected makes every "
                    "correction)", list(cfg.protocol.corrections))
    if cfg.balancing.weighting == "gradnorm" and cfg.protocol.amp == "fp16":
        raise XTaskError(f"params.yaml: {name}.protocol.amp: fp16 loss scaling is not supported with gradnorm; "
                         "use bf16 or off")
    return cfg


# Each key's section, by its name (the names are unique over the sections): ``replace`` takes keys by name.
SECTIONS = {f.name: f.metadata["section"] for f in dataclasses.fields(DatasetConfig)
            if f.metadata and f.name != "generate"}
OWNER = {f.name: s for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
assert len(OWNER) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()), "a key name in two sections"


def by_key(config: dict[str, Any], whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config of plain values (a run config, a hashed config) by ``section.key``: each section flattened one
    level, the entries named in ``whole`` kept as they are."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and k not in whole:
            out.update({f"{k}.{sub}": x for sub, x in v.items()})
        else:
            out[k] = v
    return out


def as_params(cfg: DatasetConfig) -> dict[str, Any]:
    """The section as params.yaml would hold it (plain values, lists for tuples)."""
    def plain(v):
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else (
            {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v)
    values = dataclasses.asdict(cfg)
    del values["name"]
    if values["generate"] is None:
        del values["generate"]
    return plain(values)


def replace(cfg: DatasetConfig, **changes: Any) -> DatasetConfig:
    """``cfg`` with keys changed, validated as params.yaml's: by name (``lr=1e-3``, ``decoder_width=8``), or as
    ``section.key`` where a bare name would read ambiguously (``**{"protocol.name": "corrected"}``)."""
    raw = as_params(cfg)
    for key, value in changes.items():
        where, _, name = key.rpartition(".")
        section_name = where or OWNER.get(name)
        if section_name not in SECTIONS or name not in raw[section_name]:  # raw holds every key of a section
            raise XTaskError(f"{key}: no such key in a dataset section (keys: {', '.join(sorted(OWNER))})")
        raw[section_name][name] = list(value) if isinstance(value, tuple) else value
    return parse_dataset(cfg.name, raw)


def parse_launch(raw: Any) -> LaunchConfig:
    return LaunchConfig() if raw is None else parse_section(LaunchConfig, "launch", raw)


def _methods(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail("methods", f"a non-empty list of {list(METHODS)}", raw)
    for m in raw:
        _choice("methods", m, METHODS)
    if len(set(raw)) != len(raw):
        raise _fail("methods", "a list without repeats", raw)
    return tuple(raw)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise XTaskError("params.yaml: expected a mapping with keys run, seeds and one section per dataset")
    for key in ("run", "seeds"):
        if key not in raw:
            raise XTaskError(f"params.yaml: {key}: missing (required key)")
    datasets = {name: parse_dataset(name, section) for name, section in raw.items() if name not in TOP_LEVEL}
    run, seeds = raw["run"], raw["seeds"]
    if not isinstance(run, list) or not run:
        raise _fail("run", f"a non-empty list of dataset sections {sorted(datasets)}", run)
    for name in run:
        if name not in datasets:
            raise _fail("run", f"names of dataset sections {sorted(datasets)}", name)
    if not isinstance(seeds, list) or not seeds:
        raise _fail("seeds", "a non-empty list of integers", seeds)
    return Params(run=tuple(run), seeds=tuple(_int("seeds", s, lo=0) for s in seeds), datasets=datasets,
                  methods=_methods(raw.get("methods", ["xtask"])), launch=parse_launch(raw.get("launch")))


# YAML 1.2, as DVC writes params.yaml: `dvc exp run -S nyu.optim.lr=0.00005` writes `lr: 5e-05`, which YAML 1.1
# (PyYAML) reads as a string; 1.2 reads it, and a hand-written `1e-3`, as a number (treeverse/dvc#8466).
# A bare on/off is the string it looks like. The safe loader builds plain values only, and rejects
# duplicate keys (a second `seeds:` would otherwise win silently).
_YAML = YAML(typ="safe", pure=True)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise XTaskError(f"{path}: not found (run from the repository root)")
    return parse_params(read_yaml(path))


def read_yaml(path: Path) -> Any:
    """params.yaml's plain values, read as DVC writes them (YAML 1.2, above); bad YAML is one line."""
    try:
        return _YAML.load(Path(path).read_text())
    except YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise XTaskError(f"{path}: not valid YAML{where}") from None
