"""The float64 trace (xtask/tools/check_trace.py, `make check-trace` in .ci/run): the committed trace is what this
tree computes, and a one-line change of a loss, a balancer or the protocol moves it far beyond the
tolerance. Each case traces one small variant (seconds); `make check-trace` runs them all."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xtask.common.config import load_params
from xtask.tools import check_trace as trace
from xtask.core import batches
from xtask.training import balancing, losses

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = json.loads((ROOT / "tests" / "trace_f64.json").read_text())


def _worst(names: list[str]) -> float:
    cfg = load_params(ROOT / "params.yaml").dataset("synthetic")
    got = trace.compute(cfg, {n: trace.VARIANTS[n] for n in names})
    want = {**COMMITTED, "variants": {n: COMMITTED["variants"][n] for n in names}}
    return max(err for _, err in trace.differences(got, want))


def test_the_committed_trace_is_this_trees_and_the_tolerance_is_fixed():
    assert COMMITTED["tolerance"] == trace.TOLERANCE == 1e-9
    assert set(COMMITTED["variants"]) == set(trace.VARIANTS) and COMMITTED["steps"] == trace.STEPS
    assert _worst(["losses", "stl_depth"]) <= trace.TOLERANCE


def _scaled_alpha(terms, *, alpha, gamma, original=losses.task_losses):
    return original(terms, alpha=alpha * 1.01, gamma=gamma)


def _ssim_scaled(pred, target, mask, original=losses.ssim_loss):
    return original(pred, target, mask) * 1.01


def _renormalise_to_one(self, original=balancing.OriginalGradNorm.after_step):
    original(self)
    with torch.no_grad():
        self.raw.mul_(0.999)


def _mask_void_depth(spec, seg, depth, original=batches.loss_masks):
    seg_mask, depth_mask = original(spec, seg, depth)
    return seg_mask, depth_mask & (depth > 0)


# One mutant runs in `make test` (CI runs the whole trace besides, `make check-trace`); the others are slow.
@pytest.mark.parametrize("module, name, mutant, variant", [
    ("xtask.training.losses.task_losses", None, _scaled_alpha, "corrected-mse"),  # a loss weight 1 % off
    pytest.param(losses, "ssim_loss", _ssim_scaled, "losses", marks=pytest.mark.slow),  # the SSIM term 1 % off
    pytest.param(balancing.OriginalGradNorm, "after_step", _renormalise_to_one, "gradnorm",
                 marks=pytest.mark.slow),                             # the GradNorm weights' renormalisation
    pytest.param(batches, "loss_masks", _mask_void_depth, "nyu-format", marks=pytest.mark.slow),  # a depth mask
])
def test_a_one_line_change_fails_the_trace(monkeypatch, module, name, mutant, variant):
    if name is None:
        monkeypatch.setattr(module, mutant)
    else:
        monkeypatch.setattr(module, name, mutant)
    assert _worst([variant]) > 100 * trace.TOLERANCE


def test_check_trace_says_what_differs_and_exits_1(tmp_path):
    changed = json.loads(json.dumps(COMMITTED))
    changed["variants"]["stl_seg"]["terms"][1][0] *= 1 + 1e-6
    (tmp_path / "trace.json").write_text(json.dumps(changed))
    r = subprocess.run([sys.executable, "-m", "xtask.tools.check_trace", "--trace", str(tmp_path / "trace.json"),
                        "--variants", "stl_seg"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 1
    assert "FAIL stl_seg terms step 2: relative difference 1e-06 > 1e-09" in r.stdout
    assert r.stderr.strip().startswith("error: 1 of ") and "rerun with --write" in r.stderr
    r = subprocess.run([sys.executable, "-m", "xtask.tools.check_trace", "--variants", "stl_sge"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == f"error: --variants: stl_sge is not a variant ({', '.join(trace.VARIANTS)})"
