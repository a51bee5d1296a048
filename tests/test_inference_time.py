"""Inference time: what the JSON holds and that both modes run; never how fast (machines differ)."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from xtask.common.config import OWNER, load_params, replace
from xtask.core.model import build_model
from xtask.core.hardware import resolve
from xtask.evaluation.inference_time import MODES, inference_time

ROOT = Path(__file__).resolve().parents[1]
TINY = {"enc_layers": 18, "decoder_width": 8, "ttnet_width": 4, "height": 64, "width": 128, "device": "cpu"}
FIGURES = {"images_per_s", "latency_ms_median", "latency_ms_p90", "latency_ms_mean"}


def _check(result: dict, iters: int) -> None:
    assert result["batch_size"] == 1 and (result["height"], result["width"]) == (64, 128)
    assert result["device"] == "cpu" and result["torch_threads"] >= 1 and result["iters"] == iters
    for mode in MODES:
        assert set(result[mode]) == FIGURES
        assert all(v > 0 for v in result[mode].values())
        assert result[mode]["latency_ms_p90"] >= result[mode]["latency_ms_median"]


def test_a_checkpoint_is_timed_in_both_modes(tmp_path):
    cfg = replace(load_params(ROOT / "params.yaml").dataset("synthetic"), **TINY)
    torch.save({"model": build_model(cfg.model, cfg.data.num_classes).state_dict(), "config": dataclasses.asdict(cfg),
                "seed": 0, "epoch": 1}, tmp_path / "best.pt")
    result = inference_time(cfg, resolve(cfg.runtime, cfg.protocol), tmp_path / "best.pt", warmup=1, iters=3)
    _check(result, 3)
    assert result["random_weights"] is False and result["checkpoint"] == str(tmp_path / "best.pt")
    json.dumps(result)  # plain values only: it is written as a metrics file


def test_the_command_times_a_random_model_and_needs_to_be_told_which(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():  # each key in its section
        params["synthetic"][OWNER[key]][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "pipeline.inference_time", "synthetic", "--warmup", "1", "--iters", "2",
               "--out", "timings/inference.json"]
    r = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "one of the arguments --checkpoint --random-weights is required" in r.stderr
    r = subprocess.run([*command, "--random-weights"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "timings/inference.json").read_text())
    _check(result, 2)
    assert result["random_weights"] is True and result["checkpoint"] is None and "random" in result["weights"]
