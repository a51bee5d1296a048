"""benchmarks/gpu_check.sh, the check prepared for the day a GPU is lent: it must run on the CPU (cut down)
and give every figure it promises, so that the first GPU session spends its minutes measuring, not debugging."""
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from xtask.common.config import load_params
from xtask.common.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # a script folder, not a package (gpu_check imports table_time)
gpu_check = importlib.import_module("gpu_check")

CHEAP = ["fp32", "tf32", "bf16", "channels_last"]  # compile costs minutes of C++ compilation on a CPU


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--out", str(out), *args],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2",
                                                               "PYTHON": sys.executable})
    return proc, out


def test_the_check_runs_on_the_cpu_and_prints_every_figure(tmp_path):
    proc, out = _run(tmp_path, "--variants", *CHEAP)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert report["size"] == "tiny" and report["device"]["type"] == "cpu"
    params = load_params(ROOT / "params.yaml")
    for name in ("cityscapes", "nyu"):
        entry = report["throughput"][name]
        cfg = gpu_check.shaped(params.dataset(name), gpu_check.TINY)
        assert entry["shape"] == [cfg.data.height, cfg.data.width] and entry["enc_layers"] == 34
        assert list(entry["variants"]) == CHEAP
        for figures in entry["variants"].values():
            assert figures["train_img_per_s"] > 0 and figures["eval_img_per_s"] > 0
            assert figures["peak_train_memory_gib"] is None  # GPU memory: nothing to read on a CPU
            assert figures["train_tflops"] == pytest.approx(figures["train_img_per_s"]
                                                            * entry["train_step_gflops_per_img"] / 1e3, abs=1e-3)
    table = report["table_time"]
    assert table["fp32"]["runs"] == 24
    assert 0 < table["fp32"]["hours_8_gpu"] < table["fp32"]["hours_1_gpu"]
    assert table["fastest"]["variant"] in CHEAP
    e2e = report["end_to_end"]
    assert e2e["epochs"] == 2 and list(e2e["stage_s"]) == ["generate", "prepare", "train", "evaluate"]
    assert set(e2e["paper_metrics"]) == {"miou", "pix_acc", "abs_err", "rel_err"}
    assert "table time" in proc.stderr and "end to end: evaluate" in proc.stderr  # progress, not silence


def test_the_table_time_is_the_measured_work_over_the_measured_rate():
    params = load_params(ROOT / "params.yaml")
    figures = {n: {"variants": {"fp32": {"train_tflops": t}}} for n, t in (("cityscapes", 10.0), ("nyu", 20.0))}
    hours = gpu_check.table_hours(params, figures, "fp32")
    work = sum(3 * gpu_check.table_time.run_tflop(params.dataset(n), m) / t
               for n, t in (("cityscapes", 10.0), ("nyu", 20.0)) for m in METHODS)
    assert hours["hours_1_gpu"] == pytest.approx(work / 3600, abs=0.01)  # one GPU: the runs one after another
    assert hours["hours_8_gpu"] >= work / 8 / 3600 - 0.01
    figures["nyu"]["variants"]["fp32"] = {"error": "RuntimeError: x"}
    assert gpu_check.table_hours(params, figures, "fp32") is None  # no estimate from half a measurement


def test_a_failing_variant_is_named_and_fails_the_check(monkeypatch, capsys):
    real = gpu_check.measure

    def measure(cfg, device, size):
        if cfg.protocol.amp == "bf16":
            raise RuntimeError("no bf16 kernels here\nsecond line")
        return real(cfg, device, size)

    monkeypatch.setattr(gpu_check, "measure", measure)
    assert gpu_check.main(["--device", "cpu", "--variants", "fp32", "bf16", "--no-end-to-end"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["throughput"]["nyu"]["variants"]["bf16"]["error"] == "RuntimeError: no bf16 kernels here"
    assert report["throughput"]["nyu"]["variants"]["fp32"]["train_img_per_s"] > 0  # the rest still measured
    assert "failed variants: cityscapes/bf16, nyu/bf16" in captured.err


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    if gpu_check.torch.cuda.is_available():
        pytest.skip("a GPU is usable here")
    proc, out = _run(tmp_path, "--device", "cuda")
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: --device cuda")


@pytest.mark.slow
def test_the_compiled_variant_runs_on_the_cpu(tmp_path):
    proc, _ = _run(tmp_path, "--variants", "compile", "--no-end-to-end")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    for name in ("cityscapes", "nyu"):
        assert report["throughput"][name]["variants"]["compile"]["train_img_per_s"] > 0
