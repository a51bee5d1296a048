"""params.yaml -> typed, validated configuration, built once per stage.

Every key is checked: unknown keys (typos), wrong types and values outside their choices are
reported as one line naming the key and what is allowed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

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


@dataclass(frozen=True)
class GenerateConfig:
    """The synthetic dataset's generator (section ``<dataset>.generate``)."""
    seed: int = 0
    n_train: int = 320
    n_val: int = 80
    height: int = 128
    width: int = 256


@dataclass(frozen=True)
class DatasetConfig:
    """One dataset's section: the original README's flags under their README names, plus ours."""
    name: str
    format: str
    input_path: str
    height: int
    width: int
    num_classes: int
    epochs: int
    enc_layers: int
    use_pretrain: bool
    batch_size: int
    lr: float
    betas: tuple[float, float]
    scheduler_step_size: int
    scheduler_gamma: float
    alpha: float
    gamma: float
    label_smoothing: float
    lp: str
    tdep_loss: str
    tseg_loss: str
    batch_norm: bool
    wider_ttnet: bool
    uncertainty_weights: bool
    gradnorm: bool
    protocol: str = "original"
    corrections: tuple[str, ...] = ()
    gradnorm_alpha: float = 1.5
    decoder_width: int = 128
    ttnet_width: int = 64
    pretrained_path: Optional[str] = None
    expect_full_size: bool = False
    workers: int = 0
    device: str = "auto"
    amp: str = "auto"
    tf32: bool = False
    channels_last: str = "auto"
    compile: bool = False
    deterministic: bool = False
    generate: Optional[GenerateConfig] = None

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX[self.format]

    @property
    def balancing(self) -> str:
        return "uncertainty" if self.uncertainty_weights else "gradnorm" if self.gradnorm else "none"

    def stage_values(self, stage: str) -> dict[str, Any]:
        """The keys ``stage`` reads, with their values: what its result depends on (STAGE_KEYS)."""
        values = dataclasses.asdict(self)
        return {key: values[key] for key in STAGE_KEYS[stage]}


# Which keys of a dataset section each stage reads: what its result depends on. dvc.yaml lists exactly
# these as the stage's params (tests/test_dependencies.py), and a resumable run records them. The
# RUNTIME keys change where and how fast a run goes, never what it computes (up to kernel rounding),
# so no stage depends on them and a stopped run may resume with other values.
RUNTIME_KEYS = ("workers", "device", "compile", "channels_last", "deterministic")
ARCHITECTURE_KEYS = ("enc_layers", "num_classes", "batch_norm", "wider_ttnet", "decoder_width", "ttnet_width")
_DATA_KEYS = ("input_path", "expect_full_size", "generate", "height", "width")  # read before training
STAGE_KEYS = {
    "generate": ("generate",),
    "prepare": ("format", "input_path", "height", "width", "num_classes", "expect_full_size"),
    "train": tuple(f.name for f in dataclasses.fields(DatasetConfig)
                   if f.name not in ("name", *RUNTIME_KEYS, *_DATA_KEYS)),
    "evaluate": ("format", *ARCHITECTURE_KEYS, "batch_size", "amp", "tf32", "protocol", "corrections"),
    "inference_time": ("height", "width", *ARCHITECTURE_KEYS, "amp", "tf32"),
    "figure": ("format", "num_classes"),  # the palette; everything else comes with the examples file
}


@dataclass(frozen=True)
class SlurmConfig:
    """How ``python -m xtask.tools.sweep`` submits the table to SLURM (section ``launch.slurm``; docs/slurm.md).
    Read by the sweep tool only: no stage depends on it."""
    gres: str = "gpu:1"            # each array task's --gres (one task = one dataset x method x seed)
    sbatch: tuple[str, ...] = ()   # further sbatch options, as written (--partition=gpu, --time=1-0, ...)
    dir: str = "sweeps"            # per-task checkouts, logs and status; on a filesystem every node sees
    git_remote: str = "origin"     # the git remote tasks clone from and push their experiments to
    stop_before_limit_s: int = 600  # SIGUSR1 this long before the time limit: save, then requeue


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how the train stage runs (section ``launch``); none of it changes the protocol except
    ``nproc_per_node``, which splits each batch over that many processes (DDP)."""
    where: str = "host"            # host | docker: train inside the image, DVC stays on the host | slurm
    image: str = "xtask:latest"    # the image ``where: docker`` runs (built from the Dockerfile)
    nproc_per_node: int = 1        # > 1: torchrun with that many processes (one per GPU)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


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


def _check_keys(section: str, raw: dict, allowed: list[str], required: list[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise XTaskError(f"params.yaml: {section}.{key}: unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in raw:
            raise XTaskError(f"params.yaml: {section}.{key}: missing (required key)")


def _generate(section: str, raw: Any) -> GenerateConfig:
    if not isinstance(raw, dict):
        raise _fail(section, "a mapping", raw)
    names = [f.name for f in dataclasses.fields(GenerateConfig)]
    _check_keys(section, raw, names, [])
    v = {**dataclasses.asdict(GenerateConfig()), **raw}
    return GenerateConfig(
        seed=_int(f"{section}.seed", v["seed"], lo=0), n_train=_int(f"{section}.n_train", v["n_train"], lo=1),
        n_val=_int(f"{section}.n_val", v["n_val"], lo=1), height=_int(f"{section}.height", v["height"], lo=32),
        width=_int(f"{section}.width", v["width"], lo=32))


def _corrections(key: str, v: Any, protocol: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, (list, tuple)) or len(set(v)) != len(v):
        raise _fail(key, f"a list without repeats of {list(CORRECTIONS)}", v)
    for c in v:
        _choice(key, c, CORRECTIONS)
    if v and protocol != "original":
        raise _fail(key, "[] unless protocol is original (corrected makes every correction)", v)
    return tuple(v)


def parse_dataset(name: str, raw: Any) -> DatasetConfig:
    if not isinstance(raw, dict):
        raise _fail(name, "a mapping of the dataset's settings", raw)
    fields = {f.name: f for f in dataclasses.fields(DatasetConfig) if f.name != "name"}
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    _check_keys(name, raw, list(fields), required)
    v = {n: (f.default if f.default is not dataclasses.MISSING else None) for n, f in fields.items()}
    v.update(raw)
    k = lambda key: f"{name}.{key}"  # noqa: E731
    fmt = _choice(k("format"), v["format"], FORMATS)
    betas = v["betas"]
    if not isinstance(betas, list) or len(betas) != 2:
        raise _fail(k("betas"), "a list of two numbers in [0, 1)", betas)
    uncertainty, gradnorm = _bool(k("uncertainty_weights"), v["uncertainty_weights"]), _bool(k("gradnorm"), v["gradnorm"])
    if uncertainty and gradnorm:
        raise XTaskError(f"params.yaml: {name}.gradnorm: uncertainty_weights and gradnorm are exclusive; "
                         "set one of them to false")
    if v["gradnorm"] and v["amp"] == "fp16":
        raise XTaskError(f"params.yaml: {name}.amp: fp16 loss scaling is not supported with gradnorm; "
                         "use bf16 or off")
    tdep = v["tdep_loss"]
    tdep = "SSIM" if tdep == "ssim" else tdep  # the original's spelling
    pretrained = v["pretrained_path"]
    if pretrained is not None:
        _str(k("pretrained_path"), pretrained)
    return DatasetConfig(
        name=name, format=fmt, input_path=_str(k("input_path"), v["input_path"]),
        height=_int(k("height"), v["height"], lo=32, multiple=32),
        width=_int(k("width"), v["width"], lo=32, multiple=32),
        num_classes=_choice(k("num_classes"), v["num_classes"], CLASSES[fmt]),
        epochs=_int(k("epochs"), v["epochs"], lo=1),
        enc_layers=_choice(k("enc_layers"), v["enc_layers"], ENC_LAYERS),
        use_pretrain=_bool(k("use_pretrain"), v["use_pretrain"]),
        batch_size=_int(k("batch_size"), v["batch_size"], lo=1),
        lr=_float(k("lr"), v["lr"], lo=0, lo_open=True),
        betas=(_float(k("betas"), betas[0], lo=0, hi=1, hi_open=True),
               _float(k("betas"), betas[1], lo=0, hi=1, hi_open=True)),
        scheduler_step_size=_int(k("scheduler_step_size"), v["scheduler_step_size"], lo=1),
        scheduler_gamma=_float(k("scheduler_gamma"), v["scheduler_gamma"], lo=0, hi=1, lo_open=True),
        alpha=_float(k("alpha"), v["alpha"], lo=0, hi=1), gamma=_float(k("gamma"), v["gamma"], lo=0, hi=1),
        label_smoothing=_float(k("label_smoothing"), v["label_smoothing"], lo=0, hi=1, hi_open=True),
        lp=_choice(k("lp"), v["lp"], LP_LOSSES), tdep_loss=_choice(k("tdep_loss"), tdep, TDEP_LOSSES),
        tseg_loss=_choice(k("tseg_loss"), v["tseg_loss"], TSEG_LOSSES),
        batch_norm=_bool(k("batch_norm"), v["batch_norm"]), wider_ttnet=_bool(k("wider_ttnet"), v["wider_ttnet"]),
        uncertainty_weights=uncertainty, gradnorm=gradnorm,
        protocol=_choice(k("protocol"), v["protocol"], PROTOCOLS),
        corrections=_corrections(k("corrections"), v["corrections"], v["protocol"]),
        gradnorm_alpha=_float(k("gradnorm_alpha"), v["gradnorm_alpha"], lo=0),
        decoder_width=_int(k("decoder_width"), v["decoder_width"], lo=1),
        ttnet_width=_int(k("ttnet_width"), v["ttnet_width"], lo=1),
        pretrained_path=pretrained,
        expect_full_size=_bool(k("expect_full_size"), v["expect_full_size"]),
        workers=_int(k("workers"), v["workers"], lo=0),
        device=_choice(k("device"), v["device"], DEVICES),
        amp=_choice(k("amp"), v["amp"], AMP),
        tf32=_bool(k("tf32"), v["tf32"]),
        channels_last=_choice(k("channels_last"), v["channels_last"], SWITCH),
        compile=_bool(k("compile"), v["compile"]),
        deterministic=_bool(k("deterministic"), v["deterministic"]),
        generate=None if v["generate"] is None else _generate(k("generate"), v["generate"]),
    )


def parse_launch(raw: Any) -> LaunchConfig:
    if raw is None:
        return LaunchConfig()
    if not isinstance(raw, dict):
        raise _fail("launch", "a mapping with keys where, image, nproc_per_node, slurm", raw)
    names = [f.name for f in dataclasses.fields(LaunchConfig)]
    _check_keys("launch", raw, names, [])
    v = {**dataclasses.asdict(LaunchConfig()), **raw}
    return LaunchConfig(where=_choice("launch.where", v["where"], WHERE), image=_str("launch.image", v["image"]),
                        nproc_per_node=_int("launch.nproc_per_node", v["nproc_per_node"], lo=1),
                        slurm=parse_slurm(raw.get("slurm")))


# sbatch options the sweep sets itself (xtask/runtime/slurm.py); one of them in launch.slurm.sbatch would
# change how tasks are numbered, logged, signalled or requeued behind the sweep's back
SWEEP_SBATCH = ("--array", "--output", "--error", "--signal", "--requeue", "--no-requeue", "--gres", "--job-name",
                "--parsable", "--wrap", "--wait", "--export", "--chdir", "--open-mode", "-a", "-o", "-e", "-J", "-W", "-D")


def parse_slurm(raw: Any) -> SlurmConfig:
    if raw is None:
        return SlurmConfig()
    names = [f.name for f in dataclasses.fields(SlurmConfig)]
    if not isinstance(raw, dict):
        raise _fail("launch.slurm", f"a mapping with keys {', '.join(names)}", raw)
    _check_keys("launch.slurm", raw, names, [])
    v = {**dataclasses.asdict(SlurmConfig()), **raw}
    options = v["sbatch"]
    if not isinstance(options, (list, tuple)):
        raise _fail("launch.slurm.sbatch", "a list of sbatch options such as --time=1-00:00:00", options)
    for opt in options:
        if not isinstance(opt, str) or not opt.startswith("-") or " " in opt.split("=", 1)[0]:
            raise _fail("launch.slurm.sbatch", "options written as --name=value (one list item each)", opt)
        if opt.split("=", 1)[0] in SWEEP_SBATCH:
            raise _fail("launch.slurm.sbatch", f"no option the sweep sets itself ({', '.join(SWEEP_SBATCH[:10])})",
                        opt)
    return SlurmConfig(gres=_str("launch.slurm.gres", v["gres"]), sbatch=tuple(options),
                       dir=_str("launch.slurm.dir", v["dir"]), git_remote=_str("launch.slurm.git_remote",
                                                                               v["git_remote"]),
                       stop_before_limit_s=_int("launch.slurm.stop_before_limit_s", v["stop_before_limit_s"],
                                                lo=60))


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


# YAML 1.2, as DVC writes params.yaml: `dvc exp run -S nyu.lr=0.00005` writes `lr: 5e-05`, which YAML 1.1
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
