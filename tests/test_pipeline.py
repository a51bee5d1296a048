"""The whole DVC pipeline, end to end, on a tiny synthetic config in a temporary copy of the repo."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtask.common.config import OWNER

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("--data data/prepared/synthetic --out models/synthetic/xtask/seed{0} --live dvclive/synthetic/xtask/seed{0}")
TINY = {"generate": {"seed": 3, "n_train": 12, "n_val": 6, "height": 64, "width": 128},
        "height": 32, "width": 64, "epochs": 2, "batch_size": 4, "decoder_width": 8, "ttnet_width": 4}


def set_keys(section: dict, values: dict) -> None:
    """Set keys of a dataset section of params.yaml, each in its sub-section (``generate`` replaces that one)."""
    for key, value in values.items():
        if key == "generate":
            section[key] = value
        else:
            section[OWNER[key]][key] = value


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = ""
    return env


def _copy_repo(dst: Path) -> None:
    for name in ("xtask", "pipeline", "dvc.yaml", "params.yaml", "metrics"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "seed*.json", "results.*",
                                                                             "summary.json"))
        else:
            shutil.copy(src, dst / name)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    set_keys(params["synthetic"], TINY)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _run(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    _copy_repo(dst)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    # dvclive reads the git HEAD, as in a real clone: commit the copy first
    for cmd in (git + ["init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], git + ["add", "-A"],
                git + ["commit", "-qm", "copy"]):
        r = _run(cmd, dst)
        assert r.returncode == 0, r.stderr
    r = _run([sys.executable, "-m", "dvc", "repro"], dst)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return dst


def test_repro_writes_metrics_report_and_lock(repo):
    m = json.loads((repo / "metrics/synthetic/xtask/seed0.json").read_text())
    assert m["dataset"] == "synthetic" and m["method"] == "xtask" and m["seed"] == 0
    for family in ("paper", "standard"):
        assert {"miou", "pix_acc", "abs_err", "rel_err"} <= set(m[family])
        assert 0 <= m[family]["miou"] <= 100 and 0 <= m[family]["pix_acc"] <= 100
    assert m["baseline_mean_depth"]["paper_abs_err"] > 0
    # the run config that decided it, seed aside: what the report groups seeds by
    assert len(m["config_id"]) == 16 and m["config"]["loss"]["alpha"] == 0.01 and "seed" not in m["config"]
    table = (repo / "metrics/results.md").read_text()
    assert "## synthetic" in table and "XTask (Ours)" in table and "this pipeline" in table
    assert "66.51" in table and "30.31" in table  # the original README's rows
    assert (repo / "metrics/results.csv").read_text().startswith("dataset,method,source")
    assert sorted(p.name for p in (repo / "models/synthetic/xtask/seed0").iterdir()) == ["best.pt"]
    assert not list((repo / "scratch").rglob("state.pt"))  # the finished run's resumable state is gone
    live = json.loads((repo / "dvclive/synthetic/xtask/seed0/metrics.json").read_text())
    assert live["step"] == TINY["epochs"] - 1
    assert "train@synthetic-xtask-0" in (repo / "dvc.lock").read_text()
    assert (repo / "evaluation/synthetic/xtask/seed0_examples.pt").is_file()
    assert (repo / "metrics/synthetic/xtask/seed0_examples.png").read_bytes().startswith(b"\x89PNG")


def test_second_repro_is_a_no_op_and_metrics_show(repo):
    r = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert r.returncode == 0 and "didn't change" in r.stdout
    # the summary is the one DVC metric: no seed file, no timing, no dvclive log
    r = _run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], repo)
    assert r.returncode == 0, r.stderr
    assert list(json.loads(r.stdout)[""]["data"]) == ["metrics/summary.json"], r.stdout


def _status(repo) -> str:
    r = _run([sys.executable, "-m", "dvc", "status"], repo)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_report_code_and_runtime_params_leave_training_and_evaluation_alone(repo):
    report, params = repo / "xtask/reporting/report.py", repo / "params.yaml"
    figures = repo / "xtask/reporting/figures.py"
    saved = report.read_text(), params.read_text(), figures.read_text()
    try:
        report.write_text(saved[0] + "# a comment\n")
        figures.write_text(saved[2] + "# a comment\n")
        status = _status(repo)
        assert "report:" in status and "figure@synthetic-xtask-0" in status
        assert "train@" not in status and "evaluate@" not in status
        report.write_text(saved[0])
        figures.write_text(saved[2])
        p = yaml.safe_load(saved[1])
        p["synthetic"]["runtime"].update(workers=2, device="cpu", compile=True)
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        assert "train@" not in _status(repo) and "evaluate@" not in _status(repo)
        (repo / "xtask/training/losses.py").write_text((repo / "xtask/training/losses.py").read_text() + "#\n")
        assert "train@synthetic-xtask-0" in _status(repo)  # the training code is a dependency
    finally:
        report.write_text(saved[0])
        params.write_text(saved[1])
        figures.write_text(saved[2])
        losses = repo / "xtask/training/losses.py"
        losses.write_text(losses.read_text().removesuffix("#\n"))


def test_going_back_to_params_already_run_restores_training_from_the_run_cache(repo):
    params = repo / "params.yaml"
    saved = params.read_text()
    model = repo / "models/synthetic/xtask/seed0/best.pt"
    before = model.read_bytes()
    try:
        p = yaml.safe_load(saved)
        p["synthetic"]["optim"]["epochs"] = 1
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        r = _run([sys.executable, "-m", "dvc", "repro"], repo)
        assert r.returncode == 0 and "Running stage 'train@synthetic-xtask-0'" in r.stdout, r.stdout + r.stderr
        assert model.read_bytes() != before
    finally:
        params.write_text(saved)
    r = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Stage 'train@synthetic-xtask-0' is cached - skipping run, checking out outputs" in r.stdout
    assert "Running stage 'train@" not in r.stdout
    assert model.read_bytes() == before


def test_missing_cityscapes_says_where_the_data_goes(repo):
    r = _run([sys.executable, "-m", "pipeline.prepare", "cityscapes", "--out", "data/prepared/cityscapes"], repo)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "data/cityscapes" in lines[0] and "leftImg8bit" in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_params_fail_with_one_line(repo, tmp_path):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthetic"]["loss"]["lp"] = "L3"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    r = _run([sys.executable, "-m", "pipeline.train", "synthetic", "--params", str(bad), *PATHS.format(7).split()],
             repo)
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: params.yaml: synthetic.loss.lp: expected one of "
                                "['L1', 'MSE', 'logL1', 'smoothL1'], got 'L3'")


def test_nproc_per_node_makes_the_train_stage_run_under_torchrun(repo, tmp_path):
    # params.yaml `launch.nproc_per_node: 2`: the stage command re-executes itself under torchrun
    # (2 gloo processes on the CPU); rank 0 alone writes the checkpoint and the log
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["launch"]["nproc_per_node"] = 2
    params["synthetic"]["runtime"]["device"] = "cpu"
    two = tmp_path / "params.yaml"
    two.write_text(yaml.safe_dump(params))
    env = {**_env(), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "pipeline.train", "synthetic", "--seed", "7", "--params", str(two),
                        "--no-progress", *PATHS.format(7).split()], cwd=repo, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node 2" in r.stderr
    assert r.stdout.count("best epoch") == 1 and "x 2 processes" in r.stdout
    assert (repo / "models/synthetic/xtask/seed7/best.pt").is_file()
    live = json.loads((repo / "dvclive/synthetic/xtask/seed7/metrics.json").read_text())
    assert live["step"] == TINY["epochs"] - 1


@pytest.mark.slow  # two trainings (a minute on 2 cores); the grouping itself: tests/test_report.py
def test_seeds_trained_under_two_alphas_are_two_rows_of_the_report(repo, tmp_path):
    # the scenario through the stages themselves: seed 0 is the repo's run (alpha 0.01); seed 1 is
    # trained and evaluated with alpha 0.02. Two rows of one seed each, never one row of n=2.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["synthetic"]["loss"]["alpha"], params["seeds"] = 0.02, [0, 1]
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump(params, sort_keys=False))
    seed1 = repo / "metrics/synthetic/xtask/seed1.json"
    out = {name: tmp_path / name for name in ("results.md", "results.csv", "summary.json")}
    try:
        for cmd in (["pipeline.train", "synthetic", "--seed", "1", "--params", str(other), "--no-progress",
                     *PATHS.format(1).split()],
                    ["pipeline.evaluate", "synthetic", "--seed", "1", "--params", str(other), "--no-progress",
                     "--data", "data/prepared/synthetic", "--checkpoint", "models/synthetic/xtask/seed1/best.pt",
                     "--out", str(seed1.relative_to(repo))],
                    ["pipeline.report", "--metrics", "metrics", "--params", str(other),
                     *(f"--{p.suffix[1:] if p.suffix != '.json' else 'summary'}={p}" for p in out.values())]):
            r = _run([sys.executable, "-m", *cmd], repo)
            assert r.returncode == 0, r.stderr[-3000:]
        m0 = json.loads((repo / "metrics/synthetic/xtask/seed0.json").read_text())
        m1 = json.loads(seed1.read_text())
        assert m0["config_id"] != m1["config_id"] and (m0["config"]["loss"]["alpha"], m1["config"]["loss"]["alpha"]) == (0.01, 0.02)
        summary = json.loads(out["summary.json"].read_text())["synthetic"]["xtask"]
        assert sorted(summary) == sorted(f"original@{m['config_id'][:8]}" for m in (m0, m1))
        assert [v["paper"]["miou"]["n"] for v in summary.values()] == [1, 1]
        md = out["results.md"].read_text()
        assert f"config {m0['config_id'][:8]}: loss.alpha 0.01 | paper (per-image) | 1 (0) |" in md
        assert f"config {m1['config_id'][:8]}: loss.alpha 0.02 | paper (per-image) | 1 (1) |" in md
        # the committed params (seeds [0]): seed 1's file is named as ignored, seed 0 alone counts
        r = _run([sys.executable, "-m", "pipeline.report", "--metrics", "metrics", "--md", str(out["results.md"]),
                  "--csv", str(out["results.csv"]), "--summary", str(out["summary.json"])], repo)
        assert r.returncode == 0 and r.stderr == f"{Path('metrics/synthetic/xtask/seed1.json')}: ignored: seed 1 is " \
            "not in params.yaml seeds [0]\n", r.stderr
        assert json.loads(out["summary.json"].read_text())["synthetic"]["xtask"]["original"]["paper"]["miou"]["n"] == 1
    finally:
        seed1.unlink(missing_ok=True)
        for folder in ("models/synthetic/xtask/seed1", "dvclive/synthetic/xtask/seed1"):
            shutil.rmtree(repo / folder, ignore_errors=True)


@pytest.mark.slow  # a whole stage run (a minute); the lines themselves: test_train.py, test_device.py
def test_the_train_stage_prints_its_device_and_one_line_per_epoch_without_a_terminal(repo):
    # stderr is a pipe here, as under `dvc queue logs`, CI or `docker logs`: the progress bars are off
    try:
        r = _run([sys.executable, "-m", "pipeline.train", "synthetic", "--seed", "3", "--device", "cpu",
                  *PATHS.format(3).split()], repo)
        assert r.returncode == 0, r.stderr[-3000:]
        lines = r.stderr.splitlines()
        assert re.fullmatch(r"device: cpu \(\d+ threads\)", lines[0]), lines
        epochs = [line for line in lines if " epoch " in line]
        assert len(epochs) == TINY["epochs"], lines
        for n, line in enumerate(epochs, 1):
            assert re.fullmatch(rf"synthetic xtask seed 3 epoch {n}/{TINY['epochs']} train \d+\.\d{{4}} val \d+\.\d{{4}} "
                                r"miou 0\.\d{3} abs_err \d\.\d{4} \d+\.\ds ETA \d+[smh]\S*", line), line
        assert epochs[-1].endswith("ETA 0s")
    finally:
        for folder in ("models/synthetic/xtask/seed3", "dvclive/synthetic/xtask/seed3"):
            shutil.rmtree(repo / folder, ignore_errors=True)
