"""The paper's table on a SLURM cluster: one ``sbatch --array``, one task per dataset x method x seed.

DVC's queue runs on one machine, and DVC's repository lock forbids two runs in one workspace
(treeverse/dvc#7419), so every task works in a checkout of its own, on a filesystem every node sees:

    <launch.slurm.dir>/<sweep id>/
        sweep.json               what was submitted: the commit, the git remote, the tasks, the arrays
        task.sh                  the batch script: ``python -m xtask.tools.sweep task <this folder>``
        slurm/<job>_<index>.out  SLURM's own output of each task (what happens before the task's log starts)
        tasks/<name>/repo        the task's checkout: a clone of the git remote at the commit
        tasks/<name>/log         the task's log, every attempt appended (git, dvc, the stages' output)
        tasks/<name>/status.json running | done | failed | stopped, and every attempt's job, node and GPUs

A task (``run_task``) clones the git remote into its checkout (once), checks out the sweep's commit, runs
``dvc exp run -n <dataset>-<method>-<seed> -S run=[..] -S methods=[..] -S seeds=[..] --pull --allow-missing``
there and ``dvc exp push``es the experiment to the git remote and its outputs to the default DVC remote. On
the login node ``collect`` pulls the finished ones (``dvc exp pull``), ``status`` merges squeue with the
status files, and ``resubmit`` submits the tasks that are neither done nor in the queue, as a new array.

Stopping and resuming: a stopped task's checkout keeps ``scratch/`` (git- and DVC-ignored, no stage's
output, so neither ``git checkout`` nor DVC removes it), so the next attempt in the same checkout resumes
the training (xtask/training/resume.py). SIGTERM (preemption, scancel, a requeue) is passed to the stage,
which saves its state and stops; SIGUSR1, which sbatch sends ``launch.slurm.stop_before_limit_s`` before
the time limit, does the same and then requeues the task (``scontrol requeue``), which resumes when it starts
again. A requeue by SLURM (PreemptMode=REQUEUE) runs the task again in the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from xtask.common.cli import run
from xtask.common.config import Params, SlurmConfig
from xtask.common.config import load_params
from xtask.common.errors import XTaskError
from xtask.common.io import write_json, write_text
from xtask.runtime import slurm
from xtask.runtime.command import run_command

# this interpreter by an absolute path: task.sh and the steps run it from other folders (`.venv/bin/python -m
# xtask.tools.sweep` leaves sys.executable relative)
PYTHON = os.path.abspath(sys.executable)
SWEEP_FILE = "sweep.json"
STATUS_FILE = "status.json"
# how long a stopped stage may take to save its state and exit once SIGTERM was passed on; SLURM's
# KillWait (default 30 s) bounds it from outside anyway
STOP_WAIT_S = 120.0


@dataclass(frozen=True)
class Task:
    index: int   # SLURM_ARRAY_TASK_ID
    dataset: str
    method: str
    seed: int

    @property
    def name(self) -> str:  # the experiment's name, as docs/gpus.md's queue names them
        return f"{self.dataset}-{self.method}-{self.seed}"

    def set_params(self) -> list[str]:
        return [f"run=[{self.dataset}]", f"methods=[{self.method}]", f"seeds=[{self.seed}]"]


def table(params: Params) -> list[Task]:
    """Every dataset x method x seed of params.yaml's ``run``, ``methods`` and ``seeds``, numbered."""
    combos = [(d, m, s) for d in params.run for m in params.methods for s in params.seeds]
    return [Task(k, d, m, s) for k, (d, m, s) in enumerate(combos)]


@dataclass(frozen=True)
class Sweep:
    folder: Path
    id: str
    commit: str
    git_remote: str      # the name in the submitting repository (for collect)
    git_url: str         # what tasks clone from and push to
    set_params: tuple[str, ...]
    tasks: tuple[Task, ...]
    arrays: tuple[dict[str, Any], ...]  # {"job": array job id, "indices": [...]} per sbatch, oldest first

    def task_dir(self, task: Task) -> Path:
        return self.folder / "tasks" / task.name

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "folder"}
        write_json(self.folder / SWEEP_FILE, data)


def load(folder: Path) -> Sweep:
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        raise XTaskError(f"{folder}: no {SWEEP_FILE}: not a sweep folder (python -m xtask.tools.sweep submit makes one)")
    raw = json.loads(path.read_text())
    return Sweep(folder=Path(folder).resolve(), id=raw["id"], commit=raw["commit"], git_remote=raw["git_remote"],
                 git_url=raw["git_url"], set_params=tuple(raw["set_params"]),
                 tasks=tuple(Task(**t) for t in raw["tasks"]), arrays=tuple(raw["arrays"]))


def sweeps_root(repo: Path, cfg: SlurmConfig) -> Path:
    return (repo / cfg.dir).resolve()


def latest(repo: Path, cfg: SlurmConfig) -> Path:
    """The newest sweep folder (ids sort by submission time)."""
    root = sweeps_root(repo, cfg)
    found = sorted(p for p in root.glob(f"*/{SWEEP_FILE}")) if root.is_dir() else []
    if not found:
        raise XTaskError(f"{root}: no sweep yet (launch.slurm.dir); python -m xtask.tools.sweep submit starts one")
    return found[-1].parent


def _git(args: Sequence[str], cwd: Path) -> str:
    return run_command(["git", *args], f"git {' '.join(args[:2])} in {cwd}", cwd=cwd, timeout=600).strip()


def _dvc(args: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    return run_command([PYTHON, "-m", "dvc", *args], f"dvc {' '.join(args[:2])} in {cwd}", cwd=cwd, env=env,
                       timeout=3600)


def tool_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's folder first on PATH: dvc.yaml's ``python`` and ``dvc`` are this venv's."""
    return {**env, "PATH": f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"}


def _check_submittable(repo: Path, params: Params, env: Mapping[str, str]) -> tuple[str, str]:
    """(commit, git url) the tasks will use; one line per reason it cannot be submitted."""
    cfg = params.launch.slurm
    if params.launch.where != "slurm":
        raise XTaskError(f"params.yaml: launch.where is {params.launch.where!r}: set launch.where: slurm (and "
                         "commit it) to run the table on SLURM; on one box the queue runs it (docs/gpus.md)")
    if _git(["status", "--porcelain", "--untracked-files=no"], repo):
        raise XTaskError("tracked files are modified: commit them first (every task checks out the commit, so "
                         "params.yaml and the code must be committed)")
    commit = _git(["rev-parse", "HEAD"], repo)
    url = _git(["remote", "get-url", cfg.git_remote], repo)
    if (repo / url).is_dir():  # a path relative to this checkout means nothing to a task's clone
        url = str((repo / url).resolve())
    _git(["fetch", "-q", cfg.git_remote], repo)
    if not _git(["branch", "-r", "--contains", commit, "--list", f"{cfg.git_remote}/*"], repo):
        raise XTaskError(f"HEAD {commit[:12]} is on no branch of the git remote {cfg.git_remote!r} "
                         f"(launch.slurm.git_remote): git push it first; tasks clone from there")
    default = subprocess.run([PYTHON, "-m", "dvc", "remote", "default", "--project"], cwd=repo, env=dict(env),
                             capture_output=True, text=True, timeout=600)
    if default.returncode != 0 or not default.stdout.strip():  # dvc 3.67 fails with "No default remote set"
        raise XTaskError("no default DVC remote in .dvc/config: tasks push their outputs there and collect pulls "
                         "them (dvc remote add -d <name> <url>, then commit .dvc/config)")
    if shutil.which("sbatch", path=env.get("PATH")) is None:
        raise XTaskError("sbatch: not found on PATH; submit from a SLURM login node (docs/slurm.md)")
    return commit, url


BATCH_SCRIPT = """#!/bin/bash
# Written by `python -m xtask.tools.sweep submit` (docs/slurm.md): one array task = one dataset x method x seed.
# exec: the task runner is the batch shell, so that sbatch's --signal=B:... reaches it.
cd {repo}
exec {python} -m xtask.tools.sweep task {folder}
"""


def submit(repo: Path, params: Params, set_params: Sequence[str], env: Mapping[str, str],
           say: Callable[[str], None] = print, now: Optional[dt.datetime] = None) -> Sweep:
    """Check, write the sweep folder, submit every task of the table as one array."""
    env = tool_env(env)
    commit, url = _check_submittable(repo, params, env)
    tasks = table(params)
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%d-%H%M%S")
    folder = sweeps_root(repo, params.launch.slurm) / f"{stamp}-{commit[:7]}"
    if folder.exists():
        raise XTaskError(f"{folder}: exists already; submit again in a second")
    for task in tasks:
        (folder / "tasks" / task.name).mkdir(parents=True)
    (folder / "slurm").mkdir()
    sweep = Sweep(folder=folder, id=folder.name, commit=commit, git_remote=params.launch.slurm.git_remote,
                  git_url=url, set_params=tuple(set_params), tasks=tuple(tasks), arrays=())
    write_text(folder / "task.sh", BATCH_SCRIPT.format(repo=shlex.quote(str(repo.resolve())),
                                                       python=shlex.quote(PYTHON),
                                                       folder=shlex.quote(str(folder))))
    (folder / "task.sh").chmod(0o755)
    sweep.save()
    say(f"sweep {sweep.id}: {len(tasks)} tasks of commit {commit[:12]} ({', '.join(t.name for t in tasks[:3])}"
        f"{', ...' if len(tasks) > 3 else ''}) in {folder}")
    return _submit_array(sweep, [t.index for t in tasks], params.launch.slurm, env, say)


def _submit_array(sweep: Sweep, indices: Sequence[int], cfg: SlurmConfig, env: Mapping[str, str],
                  say: Callable[[str], None]) -> Sweep:
    argv = slurm.sbatch_argv(cfg, name=f"xtask-{sweep.id}", indices=indices,
                             output=sweep.folder / "slurm" / "%A_%a.out", script=sweep.folder / "task.sh")
    say(f"sweep: {shlex.join(argv)}")
    job = slurm.parse_job_id(slurm.call(argv, env))
    sweep = dataclasses.replace(sweep, arrays=(*sweep.arrays, {"job": job, "indices": sorted(indices)}))
    sweep.save()
    say(f"sweep {sweep.id}: array job {job}, tasks {slurm.array_spec(indices)}")
    return sweep


# ---- status -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    task: Task
    state: str      # pending/running/... (squeue), or done/failed/stopped/lost/not started (status file)
    job: str        # the job id of the latest attempt or queue entry ("" when none)
    detail: str     # squeue's reason or node, or the status file's last word
    gpus: str       # CUDA_VISIBLE_DEVICES of the latest attempt
    log: Path


def read_status(sweep: Sweep, task: Task) -> dict[str, Any]:
    path = sweep.task_dir(task) / STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else {"state": "not started", "attempts": []}


def classify(queued: Optional[slurm.Queued], status: Mapping[str, Any]) -> tuple[str, str]:
    """(state, detail) of one task: the queue's word while SLURM holds it, else its status file's, where a
    task that says "running" but is in no queue was killed without a word (node failure, SIGKILL, OOM)."""
    if queued is not None:
        return queued.state.lower(), queued.reason
    state = status.get("state", "not started")
    if state == "running":
        return "lost", "ended without writing its status (killed hard, or its node failed)"
    return state, status.get("detail", "")


def rows(sweep: Sweep, env: Mapping[str, str], user: Optional[str] = None) -> list[Row]:
    text = slurm.call(slurm.squeue_argv(user or getpass.getuser()), env)
    queued = slurm.parse_squeue(text, [a["job"] for a in sweep.arrays])
    # a task resubmitted is in the newest array that holds its index
    latest_array = {k: a["job"] for a in sweep.arrays for k in a["indices"]}
    out = []
    for task in sweep.tasks:
        q = queued.get((latest_array.get(task.index, ""), task.index))
        status = read_status(sweep, task)
        state, detail = classify(q, status)
        last = status["attempts"][-1] if status["attempts"] else {}
        out.append(Row(task, state, q.job if q else last.get("job", ""), detail, last.get("gpus", ""),
                       sweep.task_dir(task) / "log"))
    return out


RESUBMIT = ("failed", "stopped", "lost", "not started")


def task_log(sweep: Sweep, name: str, lines: int) -> str:
    """The last ``lines`` lines of one task's log (every attempt is in it), then SLURM's own output of its
    latest job when the log is missing (the task died before its runner started)."""
    by_name = {t.name: t for t in sweep.tasks}
    if name not in by_name:
        raise XTaskError(f"no task {name!r} in sweep {sweep.id} (tasks: {', '.join(by_name)})")
    path = sweep.task_dir(by_name[name]) / "log"
    if path.is_file():
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    outs = sorted((sweep.folder / "slurm").glob(f"*_{by_name[name].index}.out"), key=lambda p: p.stat().st_mtime)
    if outs:
        return f"(no task log yet; SLURM's output {outs[-1]}:)\n" + outs[-1].read_text(errors="replace")
    return f"(no log yet: {name} has not started)"


def format_rows(found: Sequence[Row]) -> str:
    head = ("task", "state", "job", "gpus", "detail")
    lines = [(r.task.name, r.state, r.job, r.gpus or "-", r.detail[:80]) for r in found]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(4)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    counts: dict[str, int] = {}
    for r in found:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join([fmt.format(*head), *(fmt.format(*x) for x in lines), f"{len(found)} tasks: {summary}"])


def resubmit(sweep: Sweep, cfg: SlurmConfig, env: Mapping[str, str], say: Callable[[str], None] = print) -> Sweep:
    """Submit again, as one new array, every task that is neither done nor in the queue."""
    env = tool_env(env)
    again = [r for r in rows(sweep, env) if r.state in RESUBMIT]
    if not again:
        say(f"sweep {sweep.id}: nothing to resubmit (every task is done or in the queue)")
        return sweep
    say(f"sweep {sweep.id}: resubmitting {len(again)}: " + ", ".join(f"{r.task.name} ({r.state})" for r in again))
    return _submit_array(sweep, [r.task.index for r in again], cfg, env, say)


def collect(repo: Path, sweep: Sweep, env: Mapping[str, str], say: Callable[[str], None] = print) -> list[str]:
    """``dvc exp pull`` every finished task's experiment (git refs and DVC outputs) into ``repo``."""
    env = tool_env(env)
    found = rows(sweep, env)
    done = [r.task.name for r in found if r.state == "done"]
    if done:
        say(f"sweep {sweep.id}: dvc exp pull {sweep.git_remote} {' '.join(done)}")
        _dvc(["exp", "pull", "--rev", sweep.commit, sweep.git_remote, *done], repo, env)
    rest = [r for r in found if r.state != "done"]
    say(f"sweep {sweep.id}: collected {len(done)} of {len(found)} experiments"
        + (f"; not done: {', '.join(f'{r.task.name} ({r.state})' for r in rest)}" if rest else "")
        + ("; `python -m xtask.tools.sweep resubmit` submits the failed and stopped ones again"
           if any(r.state in RESUBMIT for r in rest) else ""))
    return done


# ---- one array task -----------------------------------------------------------------------------------

class _Stop:
    """SIGTERM/SIGINT: pass SIGTERM to the running step and stop; SIGUSR1 (time limit near): the same, then
    requeue. Installed for the task's life; the step runs in a session of its own so that its whole process
    group (dvc and the stage under it) gets the signal, not dvc alone (which would leave the stage orphaned)."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self.child: Optional[subprocess.Popen] = None

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)

    def _handle(self, signum, frame) -> None:
        if self.signal is None or signum == signal.SIGUSR1:
            self.signal = signum
        if self.child is not None and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    @property
    def requeue(self) -> bool:
        return self.signal == signal.SIGUSR1


def _wait_group_gone(pgid: int, limit_s: float = STOP_WAIT_S) -> None:
    """Until no process of the step's group is left: the stage writes its state after dvc has exited."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _step(argv: Sequence[str], cwd: Path, env: Mapping[str, str], log, stop: _Stop) -> int:
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    stop.child = proc
    if stop.signal is not None:  # the signal came between two steps
        stop._handle(stop.signal, None)
    rc = proc.wait()
    stop.child = None
    if stop.signal is not None:
        _wait_group_gone(proc.pid)
    return rc


def _record(path: Path, status: dict[str, Any], state: str, detail: str = "", **attempt: Any) -> None:
    status["state"], status["detail"] = state, detail
    status["attempts"][-1].update(attempt, state=state, detail=detail, ended=_now() if state != "running" else None)
    write_json(path, status)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_env(env: Mapping[str, str]) -> dict[str, str]:
    """What the task's steps run with: this venv first on PATH, and one CPU thread per CPU SLURM gave the task
    when nobody said how many (torch would take every core of a shared node otherwise)."""
    out = tool_env(env)
    if "OMP_NUM_THREADS" not in out and out.get("SLURM_CPUS_PER_TASK"):
        out["OMP_NUM_THREADS"] = out["SLURM_CPUS_PER_TASK"]
    return out


def task_steps(sweep: Sweep, task: Task, repo: Path, fresh: bool, have_exp: bool) -> list[tuple[list[str], Path]]:
    """(argv, cwd) of each step of one attempt. The checkout is cloned once and kept (its scratch/ holds a
    stopped run's state); every attempt returns its tracked files to the commit, which leaves the ignored
    scratch/ and DVC's outputs alone. An experiment already made by an attempt that failed to push is pushed,
    not run again."""
    dvc = [PYTHON, "-m", "dvc"]
    steps = []
    if fresh:
        steps.append((["git", "clone", "-q", "--no-checkout", sweep.git_url, str(repo)], repo.parent))
    steps.append((["git", "checkout", "-q", "--force", "--detach", sweep.commit], repo))
    if not have_exp:
        sets = [w for p in (*task.set_params(), *sweep.set_params) for w in ("-S", p)]
        steps.append((dvc + ["exp", "run", "-n", task.name, *sets, "--pull", "--allow-missing"], repo))
    steps.append((dvc + ["exp", "push", sweep.git_url, task.name], repo))
    return steps


def _what(argv: Sequence[str]) -> str:
    """``dvc exp run``, ``git clone``: which step, for the status file."""
    words = [w for w in (argv[2:] if argv[0] == PYTHON else argv) if not w.startswith("-")]
    return " ".join(words[:3 if words[0] == "dvc" else 2])


def _has_exp(repo: Path, name: str, env: Mapping[str, str]) -> bool:
    r = subprocess.run([PYTHON, "-m", "dvc", "exp", "list", "--name-only"], cwd=repo, env=dict(env),
                       capture_output=True, text=True, timeout=600)
    return r.returncode == 0 and name in r.stdout.split()


def run_task(folder: Path, env: Mapping[str, str]) -> int:
    """The body of one array task (SLURM_ARRAY_TASK_ID): run its experiment in its checkout and push it.
    Returns the exit status; the status file says what happened."""
    sweep = load(folder)
    if "SLURM_ARRAY_TASK_ID" not in env:
        raise XTaskError("no SLURM_ARRAY_TASK_ID: `xtask.tools.sweep task` is the body of an array task (task.sh)")
    index = int(env["SLURM_ARRAY_TASK_ID"])
    if not 0 <= index < len(sweep.tasks):
        raise XTaskError(f"SLURM_ARRAY_TASK_ID={index}: the sweep has tasks 0-{len(sweep.tasks) - 1}")
    task = sweep.tasks[index]
    tdir, repo = sweep.task_dir(task), sweep.task_dir(task) / "repo"
    env = task_env(env)
    status_path = tdir / STATUS_FILE
    status = read_status(sweep, task)
    gpus = env.get("CUDA_VISIBLE_DEVICES", "")
    status["attempts"].append({"job": env.get("SLURM_JOB_ID", ""), "array_job": env.get("SLURM_ARRAY_JOB_ID", ""),
                               "host": socket.gethostname(), "gpus": gpus, "started": _now(),
                               "restart_count": int(env.get("SLURM_RESTART_COUNT", "0") or 0)})
    _record(status_path, status, "running", f"on {socket.gethostname()}")
    with open(tdir / "log", "a") as log, _Stop() as stop:
        log.write(f"=== {_now()} {task.name}: attempt {len(status['attempts'])}, job {env.get('SLURM_JOB_ID')} on "
                  f"{socket.gethostname()}, CUDA_VISIBLE_DEVICES={gpus or '(unset)'}, "
                  f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '(unset)')}\n")
        log.flush()
        fresh = not (repo / ".git").is_dir()
        if not fresh:
            # one task per checkout and SLURM runs a task once at a time: a lock left by a killed attempt names
            # a process that may exist on another node, and DVC would wait for it
            (repo / ".dvc" / "tmp" / "rwlock").unlink(missing_ok=True)
            if (repo / "scratch").is_dir():
                log.write(f"the checkout is kept from an earlier attempt; its scratch/ holds: "
                          f"{', '.join(sorted(p.name for p in (repo / 'scratch').iterdir())) or 'nothing'}\n")
        have_exp = not fresh and _has_exp(repo, task.name, env)
        for argv, cwd in task_steps(sweep, task, repo, fresh, have_exp):
            rc = _step(argv, cwd, env, log, stop)
            if stop.signal is not None:
                requeued = stop.requeue and _requeue(env, log)
                name = signal.Signals(stop.signal).name
                _record(status_path, status, "stopped", f"{name} during {_what(argv)}"
                        + ("; requeued" if requeued else ""), rc=rc)
                log.write(f"=== {_now()} stopped by {name}; the checkout keeps the state to resume from"
                          + ("; requeued\n" if requeued else "\n"))
                return 128 + stop.signal
            if rc != 0:
                _record(status_path, status, "failed", f"{_what(argv)}: exit status {rc} (see the log)", rc=rc)
                log.write(f"=== {_now()} failed: {_what(argv)}: exit status {rc}\n")
                return rc
        _record(status_path, status, "done", f"experiment {task.name} pushed", rc=0)
        log.write(f"=== {_now()} done: experiment {task.name} pushed to {sweep.git_url}\n")
        return 0


def requeue_target(env: Mapping[str, str]) -> str:
    """This array task for ``scontrol requeue``: <array job>_<index>. Not SLURM_JOB_ID: one task of an array
    carries the array's own id there, and requeueing that id requeues every task of the array."""
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID", "")


def _requeue(env: Mapping[str, str], log) -> bool:
    job = requeue_target(env)
    r = subprocess.run(["scontrol", "requeue", job], env=dict(env), capture_output=True, text=True, timeout=60)
    log.write(f"$ scontrol requeue {job}: {'ok' if r.returncode == 0 else (r.stderr.strip() or r.returncode)}\n")
    return r.returncode == 0


USAGE = """The table on SLURM (launch.where: slurm; docs/slurm.md): one sbatch --array, one task per dataset x method x
seed of params.yaml's run, methods and seeds, each in its own checkout; results come back as DVC experiments.

  submit     check (committed, pushed, a default DVC remote), then sbatch the array
  status     every task's state (squeue, else its status file), job, GPUs; --log NAME prints a task's log
  collect    dvc exp pull the finished tasks' experiments into this repository
  resubmit   sbatch again, as a new array, the tasks that are neither done nor in the queue
  task       the body of one array task (task.sh runs it; not for users)

status, collect and resubmit act on the newest sweep under launch.slurm.dir unless --sweep names one.
xtask/tools/sweep.py.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("submit", "status", "collect", "resubmit", "task"))
    parser.add_argument("folder", nargs="?", type=Path, help="task: the sweep folder (task.sh passes it)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--sweep", type=Path, default=None,
                        help="the sweep folder (default: the newest under launch.slurm.dir)")
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="submit: also passed to every task's dvc exp run (repeatable), e.g. -S nyu.optim.epochs=1")
    parser.add_argument("--log", metavar="TASK", default=None,
                        help="status: print this task's log (its name, e.g. nyu-xtask-0) instead of the table")
    parser.add_argument("--lines", type=int, default=40, help="status --log: the last this many lines (default 40)")
    args = parser.parse_args()
    if args.command == "task":
        if args.folder is None:
            parser.error("task: the sweep folder is required")
        sys.exit(run_task(args.folder, os.environ))
    repo = Path.cwd()
    params = load_params(args.params)
    cfg = params.launch.slurm
    if args.command == "submit":
        submit(repo, params, args.set_params, os.environ)
        return
    sweep = load(args.sweep or latest(repo, cfg))
    if args.command == "status":
        if args.log:
            print(task_log(sweep, args.log, args.lines))
        else:
            print(f"sweep {sweep.id} ({sweep.folder}), commit {sweep.commit[:12]}")
            print(format_rows(rows(sweep, tool_env(os.environ))))
    elif args.command == "collect":
        collect(repo, sweep, os.environ)
    else:
        resubmit(sweep, cfg, os.environ)


if __name__ == "__main__":
    run(main)
