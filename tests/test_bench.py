import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from xtask.tools.bench import bench
from xtask.common.config import load_params, replace
from xtask.core.model import build_model
from xtask.core.hardware import resolve

KEYS = {"train_img_per_s", "eval_img_per_s", "loader_samples_per_s", "metric_img_per_s", "fwd_gflops_per_img",
        "train_tflops", "device"}


def test_forward_cost_equals_the_originals_at_paper_shapes():
    # the issue measured 71.5 GFLOPs per Cityscapes image for the original XTask (ResNet34), 242 for NYUv2
    params = load_params("params.yaml")
    for name, expected in (("cityscapes", 71.5), ("nyu", 242.0)):
        cfg = params.dataset(name)
        model = build_model(cfg.model, cfg.data.num_classes).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, cfg.data.height, cfg.data.width))
        assert counter.get_total_flops() / 1e9 == pytest.approx(expected, rel=0.01), name


@pytest.mark.slow  # every figure at the paper's shapes on a CPU (~1 min): `make test-all`
def test_bench_reports_every_figure():
    cfg = replace(load_params("params.yaml").dataset("synthetic"), height=32, width=64, batch_size=2,
                  decoder_width=8, ttnet_width=4, device="cpu")
    result = bench(cfg, resolve(cfg.runtime, cfg.protocol), steps=1, warmup=0)
    assert KEYS <= set(result)
    assert all(result[k] > 0 for k in KEYS - {"device"})
    assert result["device"] == "cpu" and result["amp"] == "off"
    assert result["train_step_gflops_per_img"] > 2 * result["fwd_gflops_per_img"]


@pytest.mark.slow
def test_bench_command_prints_one_json_object_per_dataset():
    r = subprocess.run([sys.executable, "-m", "xtask.tools.bench", "--dataset", "cityscapes", "--steps", "1"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and KEYS <= set(json.loads(lines[0])["cityscapes"])
