"""The table on SLURM, for real (docs/slurm.md): a single-node SLURM 22.05 on localhost (tests/localslurm.py:
Debian's packages, installed if missing, a generated config, 3 fake GPUs), a tiny table of 3 tasks (synthetic,
1 epoch, seeds 0, 1, 2) submitted by ``python -m xtask.tools.sweep submit`` as one array.

Checked: every task saw its own GPU (CUDA_VISIBLE_DEVICES); a task stopped mid-run (scancel, as a preemption
stops it) says "stopped", keeps its resumable state, and ``resubmit`` submits it alone, after which it
resumes from that state; a task sent the time limit's signal (SIGUSR1 to its batch shell) stops, requeues
itself alone and resumes when SLURM starts it again (after SLURM's fixed requeue delay, about 2 minutes); ``collect`` brings back exactly one experiment per task, and each experiment's
metrics equal those of the same three runs made by one ``dvc repro`` in a plain copy (same machine, one
thread each: bitwise). The cluster's daemons are stopped at the end, whatever happened.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import localslurm
from test_pipeline import set_keys
from xtask.tools.check_determinism import copy_repository, run_in

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PYTHON = os.path.abspath(sys.executable)  # relative when pytest was started as .venv/bin/python (make)
SEEDS = (0, 1, 2)
NAMES = [f"synthetic-xtask-{s}" for s in SEEDS]
# 32 training images in batches of 4: 8 steps in the one epoch, so that a stop lands inside it
TINY = {"generate": {"seed": 0, "n_train": 32, "n_val": 8, "height": 64, "width": 128}, "height": 32, "width": 64,
        "epochs": 1, "batch_size": 4, "decoder_width": 8, "ttnet_width": 4}
KILLED = 1  # the task stopped mid-run by scancel, then resubmitted
REQUEUED = 2  # the task that gets the time limit's signal and requeues itself
DEADLINE_S = 2400  # the tasks take a minute or two each on 2 idle cores; far longer on busy ones
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
DVC = [PYTHON, "-m", "dvc"]
IDENTITY = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com", "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("not root: a local SLURM needs root (its daemons, mknod for the fake GPUs)")
    reason = localslurm.install()
    if reason:
        pytest.skip(f"cannot install SLURM from Debian's packages: {reason}")
    with localslurm.LocalSlurm(tmp_path_factory.mktemp("slurm"), cpus=len(SEEDS), gpus=len(SEEDS)) as c:
        yield c


def _env(cluster) -> dict:
    return {**cluster.env, **IDENTITY, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": "",
            "PATH": f"{Path(PYTHON).parent}{os.pathsep}{os.environ['PATH']}"}


def _tiny(where: str, sweeps: Path):
    def edit(params: dict) -> None:
        params.update(run=["synthetic"], methods=["xtask"], seeds=list(SEEDS))
        set_keys(params["synthetic"], TINY)
        params["launch"]["where"] = where
        params["launch"]["slurm"]["dir"] = str(sweeps)
    return edit


def _sweep(args, repo, env, timeout=300) -> str:
    r = subprocess.run([PYTHON, "-m", "xtask.tools.sweep", *args], cwd=repo, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"xtask.tools.sweep {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _origin(tmp: Path, env: dict) -> Path:
    """A repository as a cluster user has it: committed, pushed to a (bare) git remote, the prepared data
    pushed to the default DVC remote."""
    origin = tmp / "origin"
    origin.mkdir()
    copy_repository(ROOT, origin, _tiny("slurm", tmp / "sweeps"), "tiny table on slurm")
    for name in (".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, origin / name)
    run_in(["git", "init", "-q", "--bare", str(tmp / "remote.git")], tmp)
    run_in(GIT + ["remote", "add", "origin", str(tmp / "remote.git")], origin)
    run_in(DVC + ["remote", "add", "-d", "store", str(tmp / "dvc-store")], origin)
    # on a cluster: prepare once (here generate + prepare), commit the lock, push the data
    subprocess.run(DVC + ["repro", "prepare@synthetic"], cwd=origin, env=env, check=True, capture_output=True)
    run_in(GIT + ["add", "-A"], origin)
    run_in(GIT + ["commit", "-qm", "prepared, remotes"], origin)
    run_in(DVC + ["push"], origin)
    run_in(GIT + ["push", "-q", "origin", "HEAD"], origin)
    return origin


def _sweep_folder(tmp: Path) -> Path:
    found = sorted((tmp / "sweeps").glob("*/sweep.json"))
    assert len(found) == 1, found
    return found[0].parent


def _status(folder: Path, name: str) -> dict:
    path = folder / "tasks" / name / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"state": "not started", "attempts": []}


def _queued(env) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("\n")[:-1]


def _wait(what: str, done, folder: Path, env, deadline: float) -> None:
    while not done():
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n" + (folder / "tasks" / n / "log").read_text()[-3000:]
                             for n in NAMES if (folder / "tasks" / n / "log").exists())
            pytest.fail(f"{what}: not after {DEADLINE_S} s; queue {_queued(env)}\n{logs}")
        time.sleep(1)


def _training_process(checkout: Path):
    """The pid of the train stage running in ``checkout`` once it catches SIGTERM (its StopRequest is set up:
    the training loop has started), else None."""
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or b"pipeline.train" not in (proc / "cmdline").read_bytes():
                continue
            if Path(os.readlink(proc / "cwd")) != checkout.resolve():
                continue
            caught = int(next(line for line in (proc / "status").read_text().splitlines()
                              if line.startswith("SigCgt:")).split()[1], 16)
        except (OSError, StopIteration):
            continue
        if caught & (1 << (signal.SIGTERM - 1)):
            return int(proc.name)
    return None


def test_the_table_as_a_slurm_array_one_experiment_per_task_and_a_stopped_task_resumes(cluster, tmp_path):
    env = _env(cluster)
    start = time.monotonic()
    deadline = start + DEADLINE_S
    origin = _origin(tmp_path, env)
    # the same three runs in one process, meanwhile: one dvc repro in a plain copy, training here
    reference = tmp_path / "reference"
    reference.mkdir()
    copy_repository(ROOT, reference, _tiny("host", tmp_path / "unused"), "the same runs, one process")
    ref_log = open(tmp_path / "reference.log", "w")
    ref = subprocess.Popen(DVC + ["repro"], cwd=reference, env=env, stdout=ref_log, stderr=subprocess.STDOUT)

    try:
        out = _sweep(["submit"], origin, env)
        assert "3 tasks" in out and "--array=0-2" in out and "--gres=gpu:1" in out, out
        folder = _sweep_folder(tmp_path)

        # stop two tasks inside their epoch: freeze each one's training once its loop runs, then signal the task
        # as SLURM would, then let the training go on to meet the signal at its next step. KILLED: scancel
        # (SIGTERM to the job's processes, as preemption sends it); REQUEUED: SIGUSR1 to the batch shell alone,
        # as --signal=B:USR1@<s> sends it before the time limit
        pids = {}
        for k in (KILLED, REQUEUED):
            checkout = folder / "tasks" / NAMES[k] / "repo"
            _wait(f"the training of task {k}", lambda: _training_process(checkout) is not None
                  or _status(folder, NAMES[k])["state"] not in ("running", "not started"), folder, env, deadline)
            pids[k] = _training_process(checkout)
            assert pids[k] is not None, _status(folder, NAMES[k])
            os.kill(pids[k], signal.SIGSTOP)
        array = json.loads((folder / "sweep.json").read_text())["arrays"][0]["job"]
        subprocess.run(["scancel", f"{array}_{KILLED}"], env=env, check=True, timeout=30)
        subprocess.run(["scancel", "--signal=USR1", "--batch", f"{array}_{REQUEUED}"], env=env, check=True, timeout=30)
        time.sleep(1)
        for pid in pids.values():
            os.kill(pid, signal.SIGCONT)

        _wait("both stopped, the cancelled one out of the queue",
              lambda: all(_status(folder, NAMES[k])["state"] == "stopped" for k in pids)
              and not any(line.startswith(f"{array}_{KILLED} ") for line in _queued(env)), folder, env, deadline)
        for k in pids:  # each kept its state to resume from
            assert len(list((folder / "tasks" / NAMES[k] / "repo/scratch").rglob("state.pt"))) == 1, NAMES[k]
        killed = _status(folder, NAMES[KILLED])
        assert killed["detail"] == "SIGTERM during dvc exp run", killed
        assert _status(folder, NAMES[REQUEUED])["detail"] == "SIGUSR1 during dvc exp run; requeued"
        table = _sweep(["status"], origin, env)
        assert f"{NAMES[KILLED]}  stopped" in table and f"{NAMES[REQUEUED]}  pending" in table, table
        # only the stopped task goes again: the requeued one waits in the queue, the other runs or is done
        out = _sweep(["resubmit"], origin, env)
        assert f"resubmitting 1: {NAMES[KILLED]} (stopped)" in out and f"--array={KILLED} " in out, out

        _wait("every task", lambda: not _queued(env), folder, env, deadline)
        status = {n: _status(folder, n) for n in NAMES}
        assert all(status[n]["state"] == "done" for n in NAMES), status
        assert [len(status[n]["attempts"]) for n in NAMES] == [1, 2, 2], status  # task 0 never requeued
        # each task saw a GPU of its own: the three ran at once on the node's three
        gpus = [status[n]["attempts"][0]["gpus"] for n in NAMES]
        assert sorted(gpus) == ["0", "1", "2"], gpus
        assert status[NAMES[REQUEUED]]["attempts"][1]["restart_count"] == 1  # SLURM's requeue, not a resubmission
        for k in pids:
            log = (folder / "tasks" / NAMES[k] / "log").read_text()
            assert f"resuming synthetic xtask seed {SEEDS[k]} from" in log, log[-3000:]
            assert not list((folder / "tasks" / NAMES[k] / "repo/scratch").rglob("state.pt"))  # gone once finished
        assert "3 tasks: 3 done" in _sweep(["status"], origin, env)
        assert "resuming" in _sweep(["status", "--log", NAMES[KILLED]], origin, env)

        out = _sweep(["collect"], origin, env)
        assert "collected 3 of 3 experiments" in out, out
    finally:
        if ref.poll() is None:
            try:
                ref.wait(timeout=max(60.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                ref.kill()
        ref_log.close()
    assert ref.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]

    # one experiment per task came back, its outputs in the local DVC cache (pulled from the DVC remote)
    shown = json.loads(run_in(DVC + ["exp", "show", "--json", "--no-pager"], origin))
    exps = {rev["name"]: rev for entry in shown for exp in (entry.get("experiments") or []) for rev in exp["revs"]}
    assert sorted(exps) == NAMES, sorted(exps)
    for seed, name in zip(SEEDS, NAMES):
        rev = exps[name]["rev"]
        got = json.loads(run_in(["git", "show", f"{rev}:metrics/synthetic/xtask/seed{seed}.json"], origin))
        want = json.loads((reference / f"metrics/synthetic/xtask/seed{seed}.json").read_text())
        assert got == want, (name, got, want)
        lock = run_in(["git", "show", f"{rev}:dvc.lock"], origin)
        model = lock.split(f"path: models/synthetic/xtask/seed{seed}\n", 1)[1].split("md5: ", 1)[1].split()[0]
        assert (origin / ".dvc/cache/files/md5" / model[:2] / model[2:]).is_file(), (name, model)
    print(f"slurm table test: {time.monotonic() - start:.0f} s")
