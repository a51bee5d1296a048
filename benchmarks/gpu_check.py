"""The GPU check: what a lent GPU is worth to this project, in one run (benchmarks/gpu_check.sh).

1. The device: GPU name, memory, compute capability, driver, the CUDA and cuDNN torch was built with.
2. Training and evaluation throughput and peak GPU memory at the paper's two shapes (params.yaml's
   `cityscapes`: ResNet34, batch 8, 128x256; `nyu`: batch 6, 288x384), in five variants: fp32 (the
   published precision, `tf32: false`), tf32, bf16 autocast, channels_last (fp32) and torch.compile (fp32).
   Random data, the code `xtask.tools.bench` times (`TrainingRun.train_step`; the `Predictor` and metric updates).
3. A 2-epoch synthetic run at the Cityscapes training size through the stages (generate, prepare, train,
   evaluate), as a user runs them, timed per stage.
4. The table's wall time (24 runs: 2 datasets x 4 methods x 3 seeds, params' epochs) recomputed from the
   measured fp32 throughput (and from the fastest variant), on 1 and 8 GPUs.

One JSON object of figures on stdout (and in --out); progress on stderr. On a CPU, or with --tiny, every
shape, count and step number is cut down so that the whole check runs in about a minute: the figures then
test the script, not the hardware ("size": "tiny" in the JSON).

    bash benchmarks/gpu_check.sh --out gpu_check.json     # on the GPU host, <= 8 minutes on one H100
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
sys.path.insert(0, str(HERE))  # table_time beside it

import torch  # noqa: E402
import yaml  # noqa: E402

import table_time  # noqa: E402
from xtask.common.config import DatasetConfig, load_params, read_yaml, replace  # noqa: E402
from xtask.runtime.command import run_command  # noqa: E402
from xtask.common.errors import XTaskError  # noqa: E402
from xtask.common.methods import METHODS  # noqa: E402
from xtask.tools.bench import eval_rate, rig, train_rate  # noqa: E402
from xtask.core.hardware import describe_device, resolve  # noqa: E402

DATASETS = ("cityscapes", "nyu")
# name -> the params a variant changes; fp32 first: the published precision, and the table's basis
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "tf32": {"tf32": True},
    "bf16": {"amp": "bf16"},
    "channels_last": {"channels_last": "on"},
    "compile": {"compile": True},
}
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Size:
    """How big the check runs: `full` on a GPU, `tiny` to test the script on a CPU."""
    name: str
    steps: int
    warmup: int
    shrink: int  # image height and width divided by this
    batch: Optional[int]  # None: the section's batch size
    e2e_train: int
    e2e_val: int
    e2e_raw: tuple[int, int]  # generated raw size; training runs at half of it, as the synthetic default


FULL = Size("full", steps=30, warmup=3, shrink=1, batch=None, e2e_train=320, e2e_val=80, e2e_raw=(256, 512))
TINY = Size("tiny", steps=2, warmup=1, shrink=4, batch=2, e2e_train=8, e2e_val=4, e2e_raw=(64, 128))


def say(msg: str) -> None:
    print(f"gpu_check: {msg}", file=sys.stderr, flush=True)


def device_report(device: torch.device) -> dict[str, Any]:
    report: dict[str, Any] = {"type": device.type, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                              "cpu": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        report.update(name=props.name, memory_gib=round(props.total_memory / GIB, 1),
                      capability=f"{props.major}.{props.minor}", line=describe_device(device),  # names the driver
                      bf16=torch.cuda.is_bf16_supported(), visible=torch.cuda.device_count())
    return report


def shaped(cfg: DatasetConfig, size: Size) -> DatasetConfig:
    """The section at the check's size: the paper's shape and batch in full, cut down when tiny."""
    h, w = cfg.data.height // size.shrink, cfg.data.width // size.shrink
    return replace(cfg, height=h - h % 32, width=w - w % 32,
                   batch_size=size.batch or cfg.optim.batch_size)


def measure(cfg: DatasetConfig, device: str, size: Size) -> dict[str, Any]:
    """Train and eval images per second of XTask at ``cfg``'s shape, its step's GFLOPs and the peak memory."""
    hw = resolve(cfg.runtime, cfg.protocol, device)
    cuda = hw.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(hw.device)
    r = rig(cfg, hw)
    warmup = size.warmup + (2 if hw.compile else 0)  # the first calls of a compiled model compile it
    train = train_rate(r, steps=size.steps, warmup=warmup)
    peak = torch.cuda.max_memory_allocated(hw.device) / GIB if cuda else None
    evaluation = eval_rate(r, steps=size.steps, warmup=warmup)
    return {"train_img_per_s": train, "eval_img_per_s": evaluation,
            "peak_train_memory_gib": None if peak is None else round(peak, 2)}


def step_gflops(cfg: DatasetConfig) -> float:
    """One training image's step in GFLOPs (as benchmarks/table_time.py counts work: 3 forwards)."""
    return table_time.STEP_PER_FORWARD * table_time.forward_gflops(cfg, "xtask")


def throughput(params, device: str, size: Size, variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in DATASETS:
        cfg = shaped(params.dataset(name), size)
        gflops = step_gflops(cfg)
        entry: dict[str, Any] = {"shape": [cfg.data.height, cfg.data.width], "batch_size": cfg.optim.batch_size,
                                 "enc_layers": cfg.model.enc_layers, "train_step_gflops_per_img": round(gflops, 2),
                                 "variants": {}}
        for variant in variants:
            start = time.perf_counter()
            try:
                figures = measure(replace(cfg, **VARIANTS[variant]), device, size)
            except Exception as err:  # one variant failing (a compiler missing, say) must not hide the rest
                figures = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
            else:
                figures["train_tflops"] = round(figures["train_img_per_s"] * gflops / 1e3, 3)
            figures["wall_s"] = round(time.perf_counter() - start, 1)
            entry["variants"][variant] = figures
            shown = {k: v for k, v in figures.items() if k != "wall_s"}
            say(f"{name} {cfg.data.height}x{cfg.data.width} bs {cfg.optim.batch_size} {variant}: {shown}")
            torch._dynamo.reset()  # each compiled variant starts from nothing, within dynamo's cache limits
        out[name] = entry
    return out


def _stage(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    run_command([sys.executable, "-m", *cmd], f"end-to-end run: `{' '.join(cmd[:2])}` failed", cwd=cwd)
    return round(time.perf_counter() - start, 1)


def end_to_end(device: str, size: Size, work: Path) -> dict[str, Any]:
    """The synthetic section at the Cityscapes training size (128x256 full; the encoder and widths of the
    `cityscapes` section), 2 epochs, through the stages' own commands in a folder of its own."""
    params = read_yaml(ROOT / "params.yaml")
    paper = params["cityscapes"]
    h, w = size.e2e_raw
    section = params["synthetic"]
    section["data"].update(input_path=str(work / "raw"), height=h // 2, width=w // 2)
    section["model"].update(enc_layers=paper["model"]["enc_layers"], decoder_width=paper["model"]["decoder_width"],
                            ttnet_width=paper["model"]["ttnet_width"])
    section["optim"].update(epochs=2, batch_size=size.batch or paper["optim"]["batch_size"])
    section["runtime"]["device"] = device
    section["generate"].update(n_train=size.e2e_train, n_val=size.e2e_val, height=h, width=w)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    common = ["--params", str(work / "params.yaml"), "--no-progress"]
    model, metrics = work / "model", work / "metrics.json"
    stages = {
        "generate": ["pipeline.generate", "synthetic", *common, "--out", str(work / "raw")],
        "prepare": ["pipeline.prepare", "synthetic", *common, "--out", str(work / "prepared")],
        "train": ["pipeline.train", "synthetic", *common, "--data", str(work / "prepared"), "--out", str(model),
                  "--live", str(work / "live"), "--scratch", str(work / "scratch")],
        "evaluate": ["pipeline.evaluate", "synthetic", *common, "--data", str(work / "prepared"),
                     "--checkpoint", str(model / "best.pt"), "--out", str(metrics)],
    }
    seconds = {}
    for name, cmd in stages.items():
        seconds[name] = _stage(cmd, ROOT)
        say(f"end to end: {name} {seconds[name]} s")
    result = json.loads(metrics.read_text())
    return {"epochs": 2, "shape": [h // 2, w // 2], "raw_shape": [h, w], "n_train": size.e2e_train,
            "n_val": size.e2e_val, "enc_layers": paper["model"]["enc_layers"], "stage_s": seconds,
            "train_img_per_s": round(2 * size.e2e_train / seconds["train"], 2),  # process start and validation included
            "paper_metrics": result["paper"]}


def table_hours(params, figures: dict[str, Any], variant: str) -> Optional[dict[str, Any]]:
    """The 24-run table's wall time in hours on 1 and 8 GPUs (one run per GPU at a time), each run's work
    (table_time.run_tflop: its epochs of training and validation) at the TFLOP/s measured for ``variant``."""
    work = []
    for name in DATASETS:
        measured = figures[name]["variants"].get(variant, {})
        if "train_tflops" not in measured:
            return None
        cfg = params.dataset(name)
        for method in METHODS:
            work += [table_time.run_tflop(cfg, method) / measured["train_tflops"]] * 3  # seconds; 3 seeds
    work.sort(reverse=True)  # longest first, as docs/gpus.md queues them
    return {"variant": variant, "runs": len(work),
            **{f"hours_{g}_gpu": round(table_time.makespan(work, g, 1, 1.0, 1.0) / 3600, 2) for g in (1, 8)}}


def table_time_estimates(params, figures: dict[str, Any]) -> dict[str, Any]:
    def total(variant: str) -> float:
        v = [figures[n]["variants"].get(variant, {}).get("train_tflops") for n in DATASETS]
        return sum(v) if all(v) else 0.0
    measured = [v for v in VARIANTS if total(v) > 0]
    fastest = max(measured, key=total) if measured else None
    return {"fp32": table_hours(params, figures, "fp32"),
            "fastest": table_hours(params, figures, fastest) if fastest else None}


def check(device: str, size: Size, variants: list[str], e2e: bool) -> dict[str, Any]:
    params = load_params(ROOT / "params.yaml")
    started = time.perf_counter()
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    report: dict[str, Any] = {"size": size.name, "device": device_report(dev)}
    say(f"device: {report['device']}")
    report["throughput"] = throughput(params, device, size, variants)
    report["table_time"] = table_time_estimates(params, report["throughput"])
    say(f"table time: {report['table_time']}")
    if e2e:
        with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
            report["end_to_end"] = end_to_end(device, size, Path(tmp))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU where torch sees one, else the CPU")
    parser.add_argument("--tiny", action="store_true", help="the cut-down sizes even on a GPU (always on a CPU)")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS),
                        help="which precision/layout variants to time (default all)")
    parser.add_argument("--no-end-to-end", dest="e2e", action="store_false", help="skip the 2-epoch stage run")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda, but torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU",
              file=sys.stderr)
        return 1
    size = TINY if args.tiny or device == "cpu" else FULL
    try:
        report = check(device, size, args.variants, args.e2e)
    except XTaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report["command"] = ["benchmarks/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]
    text = json.dumps(report, indent=1)
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)  # no half-written file
    print(text)
    failed = [f"{n}/{v}" for n, e in report["throughput"].items() for v, f in e["variants"].items() if "error" in f]
    if failed:
        say(f"failed variants: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
