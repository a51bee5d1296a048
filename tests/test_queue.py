"""Several experiments at once through DVC's experiment queue, as on one large GPU.

`dvc exp run --queue -S ...` stages one experiment per variant; `dvc queue start -j 2` runs two at a
time, each in its own temporary workspace under .dvc/tmp/exps. This copies the repo into a temporary
directory with the tiny synthetic config of test_pipeline.py, queues two variants (another seed, another
alpha), runs them two at a time and reads both experiments' metrics back with `dvc exp show --json`.
"""
import json
import re
import subprocess
import sys
import time

import pytest

from test_pipeline import _copy_repo, _env

DEADLINE_S = 300  # both tiny experiments take well under a minute each when the machine is idle
SUMMARY = "metrics/summary.json"  # the report stage's summary: the one DVC metric
EXPERIMENTS = {  # name -> (--set-param, the metrics file its evaluate stage writes)
    "q-seed1": ("seeds=[1]", "metrics/synthetic/xtask/seed1.json"),
    "q-alpha": ("synthetic.loss.alpha=0.02", "metrics/synthetic/xtask/seed0.json"),
}
GIT_ID = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
          "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def _queue_env():
    env = _env()
    # two jobs share the CPU here: one BLAS/OpenMP thread each instead of every job taking every core
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **GIT_ID)
    return env


def _dvc(args, cwd, timeout=120):
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=_queue_env(), capture_output=True,
                          text=True, timeout=timeout)


def _git_show(repo, rev, path):
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _statuses(repo):
    """{experiment name: Queued | Running | Success | Failed ...} and the worker line of `dvc queue status`."""
    r = _dvc(["queue", "status"], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    found, workers = {}, ""
    for line in r.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[1] in EXPERIMENTS:
            found[cols[1]] = cols[-1]
        if line.startswith("Worker status:"):
            workers = line
    return found, workers


def _logs(repo):
    out = []
    for name in EXPERIMENTS:
        r = _dvc(["queue", "logs", name], repo)
        out.append(f"--- dvc queue logs {name} (rc {r.returncode})\n{r.stdout[-4000:]}{r.stderr[-2000:]}")
    return "\n".join(out)


def _stop_workers(repo):
    """Kill whatever still runs and wait (briefly) until `dvc queue status` reports no worker at all."""
    _dvc(["queue", "stop", "--kill"], repo)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, workers = _statuses(repo)
        if re.search(r"0 active, 0 idle", workers):
            return
        time.sleep(1)


@pytest.fixture
def repo(tmp_path):
    _copy_repo(tmp_path)
    for cmd in (["git", "init", "-q"], ["git", "config", "user.name", "test"],
                ["git", "config", "user.email", "test@example.com"],
                [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        r = subprocess.run(cmd, cwd=tmp_path, env=_queue_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    return tmp_path


def test_two_queued_experiments_run_concurrently_and_report_metrics(repo):
    for name, (param, _) in EXPERIMENTS.items():
        r = _dvc(["exp", "run", "--queue", "-n", name, "-S", param], repo)
        assert r.returncode == 0 and f"Queued experiment '{name}'" in r.stdout, r.stdout + r.stderr
    found, workers = _statuses(repo)
    assert found == {name: "Queued" for name in EXPERIMENTS} and "0 active" in workers

    try:
        # the workers it spawns inherit its stdout/stderr: with pipes, waiting for EOF would wait for the queue
        with open(repo / ".dvc/tmp/queue-start.log", "w+") as log:
            r = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=repo,
                               env=_queue_env(), stdout=log, stderr=subprocess.STDOUT, timeout=60)
            log.seek(0)
            out = log.read()
        assert r.returncode == 0 and "Started '2' new experiments task queue workers" in out, out
        seen_running_together, history = False, []
        deadline = time.monotonic() + DEADLINE_S
        while True:
            found, workers = _statuses(repo)
            history.append((round(time.monotonic() - deadline + DEADLINE_S), dict(found), workers))
            seen_running_together |= list(found.values()).count("Running") == 2
            if any(s not in ("Queued", "Running", "Success") for s in found.values()):
                pytest.fail(f"an experiment did not succeed: {found}\n{_logs(repo)}")
            if found == {name: "Success" for name in EXPERIMENTS}:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"queue not done after {DEADLINE_S}s: {found} ({workers})\n{_logs(repo)}")
            time.sleep(2)
    finally:
        _stop_workers(repo)

    # both ran at the same time, each in its own temporary workspace
    assert seen_running_together, history
    for name in EXPERIMENTS:
        r = _dvc(["queue", "logs", name], repo)
        assert r.returncode == 0 and "Running stage 'evaluate@synthetic-" in r.stdout, r.stdout + r.stderr

    r = _dvc(["exp", "show", "--json", "--no-pager"], repo)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    exps = {rev["name"]: rev for entry in shown for exp in (entry.get("experiments") or []) for rev in exp["revs"]}
    assert set(EXPERIMENTS) <= set(exps), sorted(exps)
    params = {name: exps[name]["data"]["params"]["params.yaml"]["data"] for name in EXPERIMENTS}
    assert params["q-seed1"]["seeds"] == [1] and params["q-seed1"]["synthetic"]["loss"]["alpha"] == 0.01
    assert params["q-alpha"]["seeds"] == [0] and params["q-alpha"]["synthetic"]["loss"]["alpha"] == 0.02
    for name, (_, seed_file) in EXPERIMENTS.items():
        # the DVC metric is the seed-independent summary: both experiments fill the same keys
        metrics = exps[name]["data"]["metrics"]
        assert list(metrics) == [SUMMARY], (name, sorted(metrics))
        miou = metrics[SUMMARY]["data"]["synthetic"]["xtask"]["original"]["paper"]["miou"]
        assert miou["n"] == 1 and 0 <= miou["mean"] <= 100, (name, miou)
        # the seed's own file is a plain output, in the experiment's git commit
        m = json.loads(_git_show(repo, exps[name]["rev"], seed_file))
        assert m["seed"] == params[name]["seeds"][0] and m["paper"]["miou"] == miou["mean"], (name, m)

    # the experiments left the user's workspace alone: no metrics there until `dvc exp apply`
    assert not (repo / "metrics/synthetic/xtask/seed1.json").exists()
    r = _dvc(["exp", "apply", "q-seed1"], repo)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((repo / "metrics/synthetic/xtask/seed1.json").read_text())
    assert m["paper"]["miou"] == exps["q-seed1"]["data"]["metrics"][SUMMARY]["data"]["synthetic"]["xtask"][
        "original"]["paper"]["miou"]["mean"]
