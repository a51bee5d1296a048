"""How a run uses the hardware: precision, memory format, compilation, backend flags.

``auto`` picks what is fastest on the device found without changing the paper's protocol (batch
size, epochs, learning rate): bf16 autocast and channels_last on a CUDA GPU that supports bf16,
plain fp32 on a CPU.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

import torch

from xtask.common.config import ProtocolConfig, RuntimeConfig
from xtask.common.errors import XTaskError
from xtask.runtime import gpu_slots

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: fp32
    channels_last: bool
    compile: bool

    @property
    def amp(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device in the chosen memory format (in place); return it."""
        return model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)

    def compiled(self, model: torch.nn.Module) -> torch.nn.Module:
        return torch.compile(model) if self.compile else model

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device in the chosen memory format; return what to call (maybe compiled)."""
        return self.compiled(self.place(model))

    def optimizer(self, params: Iterable[torch.nn.Parameter], lr: float, betas) -> torch.optim.Adam:
        # fused Adam: one kernel for all parameters on CUDA; the default multi-tensor path elsewhere
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=self.device.type == "cuda" or None)

    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        return torch.amp.GradScaler(self.device.type) if self.amp_dtype is torch.float16 else None


def _uuid(index: int) -> str:
    return str(torch.cuda.get_device_properties(index).uuid)


def require_device(requested: str, key: str = "device") -> None:
    """``cuda`` where none is usable: one line naming ``key`` (the params key or flag that asked for it),
    why that may be, and how to run on the CPU on purpose. The paper's sections ask for cuda, so that a
    machine whose driver is too old for the torch wheel's CUDA never trains them on the CPU in silence."""
    if requested == "cuda" and not torch.cuda.is_available():
        name = key.removeprefix("params.yaml: ")
        fix = (f"set {name}: cpu (dvc exp run -S {name}=cpu) or pass --device cpu" if key.startswith("params.yaml: ")
               else "pass --device cpu (or set the dataset's runtime.device: cpu in params.yaml)")
        raise XTaskError(f"{key}: cuda, but no CUDA device is usable here (torch {torch.__version__}, built for "
                         f"CUDA {torch.version.cuda or 'none'}: no GPU visible, or a driver too old for that CUDA); "
                         f"to run on the CPU on purpose, {fix}")


def describe_device(device: torch.device) -> str:
    """One line saying where a run computes: ``device: cpu (N threads)``, or the GPU's name, its driver and
    the CUDA version torch was built for."""
    if device.type != "cuda":
        return f"device: {device.type} ({torch.get_num_threads()} threads)"
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return (f"device: cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB), driver {_driver()}, "
            f"CUDA {torch.version.cuda}")


def _driver() -> str:
    """The NVIDIA driver's version, through NVML (torch's own dependency); 'unknown' where NVML is not."""
    try:
        import pynvml
        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML library or module: the line still names the GPU and CUDA
        return "unknown"


def select_device(requested: str, env: Mapping[str, str] = os.environ) -> torch.device:
    """cpu or cuda; with several visible GPUs, a single process takes the least-loaded free one, so that
    queued jobs spread over them (xtask/runtime/gpu_slots.py; torchrun's ranks get theirs in setup)."""
    require_device(requested)
    if requested == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if requested in ("auto", "cuda"):
        index = gpu_slots.gpu_for_this_process(torch.cuda.device_count(), env, _uuid)
        if index is None:
            return torch.device("cuda")
        torch.cuda.set_device(index)  # what an unindexed "cuda" (allocations, streams) means from here on
        return torch.device("cuda", index)
    return torch.device(requested)


def set_fp32_precision(tf32: bool) -> None:
    """fp32 convolutions and matmuls in full fp32 ("ieee"), as the published runs (torch 1.7 on pre-Ampere
    GPUs) computed them, or in TF32 on GPUs that have it (``tf32: true``). PyTorch's own default lets
    cuDNN convolutions use TF32 on Ampere and newer GPUs: a silent change of precision, so it is set here
    either way. No effect on the CPU."""
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def resolve(runtime: RuntimeConfig, precision: ProtocolConfig, device_override: Optional[str] = None, *,
            amp_override: Optional[str] = None) -> Hardware:
    """The hardware a run uses: ``runtime``'s device and speed switches, ``precision``'s amp and tf32 (the
    protocol section's), each maybe overridden."""
    device = select_device(device_override or runtime.device)
    cuda = device.type == "cuda"
    amp = amp_override or precision.amp
    if amp == "auto":
        amp = "bf16" if cuda and torch.cuda.is_bf16_supported() else "off"
    channels_last = runtime.channels_last == "on" or (runtime.channels_last == "auto" and cuda)
    if runtime.deterministic:
        # bitwise-repeatable GPU runs, at some cost in speed (CPU runs are repeatable anyway)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    elif cuda:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    set_fp32_precision(precision.tf32)
    return Hardware(device, DTYPES.get(amp), channels_last, runtime.compile)
