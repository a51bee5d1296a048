"""Where a run computes is said before it starts, and a paper run never falls to the CPU in silence."""
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from tiny import prepare_tiny, tiny_config, train_tiny
from xtask.common.config import load_params
from xtask.common.errors import XTaskError
from xtask.core import hardware

ROOT = Path(__file__).resolve().parents[1]


def test_the_paper_sections_ask_for_a_gpu_and_the_synthetic_one_takes_what_there_is():
    p = load_params(ROOT / "params.yaml")
    assert tuple(p.dataset(name).runtime.device for name in ("cityscapes", "nyu", "synthetic")) == \
        ("cuda", "cuda", "auto")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_cuda_run_without_a_gpu_is_one_line_and_exit_1(tmp_path):
    # the stage stops before reading any data: the paths need not exist
    r = subprocess.run([sys.executable, "-m", "pipeline.train", "cityscapes", "--data", str(tmp_path / "none"),
                        "--out", str(tmp_path / "model"), "--live", str(tmp_path / "live")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: params.yaml: cityscapes.runtime.device: cuda, but no CUDA device is usable here"), r.stderr
    assert "set cityscapes.runtime.device: cpu (dvc exp run -S cityscapes.runtime.device=cpu) or pass --device cpu" \
        in lines[0]
    assert not (tmp_path / "live").exists() and not (tmp_path / "model").exists()
    # asked for by the flag: the flag is named, and the way out
    with pytest.raises(XTaskError, match=r"^--device: cuda, but no CUDA device .* pass --device cpu \(or set"):
        hardware.require_device("cuda", "--device")


def test_the_device_is_printed_before_the_first_epoch(tmp_path, capsys):
    data = prepare_tiny(tmp_path)
    capsys.readouterr()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train_tiny(tiny_config(epochs=1), 0, data, tmp_path / "out")
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "device: cpu (1 threads)", err


def test_a_gpu_is_described_by_name_driver_and_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30))
    nvml = types.SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None,
                                 nvmlSystemGetDriverVersion=lambda: "575.57.08")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert hardware.describe_device(torch.device("cuda", 1)) == \
        "device: cuda:1 NVIDIA H100 80GB HBM3 (80 GiB), driver 575.57.08, CUDA 13.0"
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: the line still names the GPU
    assert hardware.describe_device(torch.device("cuda", 1)).endswith("driver unknown, CUDA 13.0")
