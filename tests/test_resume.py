"""Runs that are killed or stopped resume and end bitwise equal to an uninterrupted run (CPU, fp32); the
state lives in scratch/, outside DVC's outputs, and is gone once the run finished."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from test_pipeline import _copy_repo, _env, set_keys

TINY = {"generate": {"seed": 4, "n_train": 32, "n_val": 8, "height": 64, "width": 128},
        "height": 32, "width": 64, "epochs": 4, "batch_size": 4, "decoder_width": 8, "ttnet_width": 4}
CKPT = Path("models/synthetic/xtask/seed0")
LOG = Path("dvclive/synthetic/xtask/seed0")
LIVE = LOG / "metrics.json"
SCRATCH = Path("scratch")
# --save-every 0: the state is written at every step, so that a kill at any moment finds one
TRAIN = [sys.executable, "-m", "pipeline.train", "synthetic", "--no-progress", "--data", "data/prepared/synthetic",
         "--out", str(CKPT), "--live", str(LOG), "--save-every", "0"]
EVALUATE = ["pipeline.evaluate", "synthetic", "--no-progress", "--data", "data/prepared/synthetic",
            "--checkpoint", str(CKPT / "best.pt"), "--out", "metrics/synthetic/xtask/seed0.json"]


def _stage(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=repo, env=_env(), capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    repo = tmp_path_factory.mktemp("resume")
    _copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    set_keys(params["synthetic"], TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in (["pipeline.generate", "synthetic", "--out", "data/synthetic"],
                  ["pipeline.prepare", "synthetic", "--no-progress", "--out", "data/prepared/synthetic"]):
        r = _stage(repo, *stage)
        assert r.returncode == 0, r.stderr
    return repo


def _copy(prepared: Path, dst: Path) -> Path:
    shutil.copytree(prepared, dst)
    return dst


def _finish(repo: Path) -> dict:
    for args in (TRAIN[2:], EVALUATE):
        r = _stage(repo, *args)
        assert r.returncode == 0, r.stderr
    return json.loads((repo / "metrics/synthetic/xtask/seed0.json").read_text())


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory):
    repo = _copy(prepared, tmp_path_factory.mktemp("ref") / "repo")
    return repo, _finish(repo)


def _start_and_signal(repo: Path, sig: int) -> subprocess.CompletedProcess:
    """Start training; once the first epoch is logged, send ``sig``; return the finished process."""
    proc = subprocess.Popen(TRAIN, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (repo / LIVE).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(TRAIN, proc.returncode, out, err)


def _state(repo: Path) -> dict:
    """The one resumable state in the repo's scratch folder."""
    states = list((repo / SCRATCH).rglob("state.pt"))
    assert len(states) == 1, states
    return torch.load(states[0], weights_only=True)


def _assert_same_run(repo: Path, reference) -> None:
    ref_repo, ref_metrics = reference
    assert _finish(repo) == ref_metrics
    got = torch.load(repo / CKPT / "best.pt", weights_only=True)
    want = torch.load(ref_repo / CKPT / "best.pt", weights_only=True)
    assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])
    assert json.loads((repo / LIVE).read_text()) == json.loads((ref_repo / LIVE).read_text())
    for tsv in (ref_repo / LOG / "plots").rglob("*.tsv"):  # every epoch logged once, as uninterrupted
        assert (repo / tsv.relative_to(ref_repo)).read_text() == tsv.read_text()
    assert not list((repo / SCRATCH).rglob("state.pt"))


def test_sigkill_mid_run_then_rerun_gives_the_same_metrics(prepared, reference, tmp_path):
    repo = _copy(prepared, tmp_path / "repo")
    r = _start_and_signal(repo, signal.SIGKILL)
    assert r.returncode == -signal.SIGKILL
    state = _state(repo)
    assert 1 <= state["epoch"] < TINY["epochs"] and not state["finished"]
    assert not (repo / CKPT / "best.pt").exists()  # DVC's output holds nothing until the run finished
    _assert_same_run(repo, reference)


def test_sigterm_saves_at_a_step_and_resumes(prepared, reference, tmp_path):
    repo = _copy(prepared, tmp_path / "repo")
    r = _start_and_signal(repo, signal.SIGTERM)
    assert r.returncode == 1
    *progress, last = r.stderr.strip().splitlines()
    assert "stopped by signal 15" in last and "to resume" in last and last.startswith("error: ")
    # before it only the progress lines: the device, then one line per finished epoch
    assert progress[0].startswith("device: cpu") and all(" epoch " in line for line in progress[1:]), progress
    assert "Traceback" not in r.stderr
    state = _state(repo)
    assert not state["finished"] and state["step"] > 0  # saved at the step the signal arrived
    _assert_same_run(repo, reference)


def test_changed_params_start_afresh_and_the_old_state_waits_for_them(prepared, tmp_path):
    repo = _copy(prepared, tmp_path / "repo")
    r = _start_and_signal(repo, signal.SIGTERM)
    assert r.returncode == 1
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["synthetic"]["loss"]["alpha"] = 0.5
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    r = _stage(repo, *TRAIN[2:])
    assert r.returncode == 0, r.stderr
    assert "resuming" not in r.stderr and "loss.alpha 0.01 -> 0.5" in r.stderr and "is kept there" in r.stderr
    assert len(list((repo / SCRATCH).rglob("state.pt"))) == 1  # the stopped run's, for a return to alpha 0.01
    params_file.write_text(original)
    r = _stage(repo, *TRAIN[2:])
    assert r.returncode == 0 and "resuming synthetic xtask seed 0" in r.stderr, r.stderr
    assert not list((repo / SCRATCH).rglob("state.pt"))


def test_restart_discards_the_saved_state(prepared, tmp_path):
    repo = _copy(prepared, tmp_path / "repo")
    _start_and_signal(repo, signal.SIGTERM)
    r = _stage(repo, *TRAIN[2:], "--restart")
    assert r.returncode == 0 and "resuming" not in r.stderr, r.stderr
    assert not list((repo / SCRATCH).rglob("state.pt"))
