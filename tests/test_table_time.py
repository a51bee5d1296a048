"""benchmarks/table_time.py, the arithmetic docs/gpus.md quotes: FLOP counts and the queue simulation."""
import importlib.util
from pathlib import Path

import pytest

from xtask.common.config import load_params

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("table_time", ROOT / "benchmarks" / "table_time.py")
table_time = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table_time)


def test_the_meta_device_count_gives_the_measured_xtask_forward_flops():
    params = load_params(ROOT / "params.yaml")
    assert table_time.forward_gflops(params.dataset("cityscapes"), "xtask") == pytest.approx(71.5, abs=0.05)
    assert table_time.forward_gflops(params.dataset("nyu"), "xtask") == pytest.approx(242.4, abs=0.05)


def test_the_queue_simulation():
    # two GPUs, one slot each, 1 TFLOP/s: [3, 2, 1] runs as 3 on one GPU, 2 then 1 on the other
    assert table_time.makespan([3, 2, 1], 2, 1, 1.0, 1.0) == pytest.approx(3)
    # one GPU that one run alone fills halfway: two slots finish 2 + 2 in 4 s, one slot in 8 s
    assert table_time.makespan([2, 2], 1, 2, 1.0, 0.5) == pytest.approx(4)
    assert table_time.makespan([2, 2], 1, 1, 1.0, 0.5) == pytest.approx(8)
    # sharing: two runs of 1 on one GPU that one run fills: both end at 2 s
    assert table_time.makespan([1, 1], 1, 2, 1.0, 1.0) == pytest.approx(2)
