"""SLURM's commands as the sweep uses them: the sbatch line of a job array, squeue's view of its tasks, a
requeue. Plain calls of sbatch, squeue and scontrol; never sacct, which needs accounting (often off, and
off on the test cluster), so a task that left the queue is known by the status file it wrote itself.

The command lines are built by pure functions (tested as such); ``call`` runs one and turns a failure into
one line naming the command.
"""
from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from xtask.common.config import SlurmConfig
from xtask.common.errors import XTaskError
from xtask.runtime.command import run_command

# the signal sbatch sends the batch script stop_before_limit_s before the time limit; preemption and
# scancel send SIGTERM, so the task can tell "requeue me" (USR1) from "stop" (TERM)
LIMIT_SIGNAL = "USR1"
# squeue states of a task that has left the queue for good (squeue may still list it for MinJobAge)
FINAL = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "SPECIAL_EXIT"}


@dataclass(frozen=True)
class Queued:
    """One array task as squeue lists it."""
    job: str     # the task's own job id (scontrol and scancel take it)
    state: str   # PENDING, RUNNING, COMPLETING, ...
    reason: str  # why it waits (Resources, Priority, BeginTime, ...) or the node it runs on


def array_spec(indices: Iterable[int]) -> str:
    """``0-2,5,7-8``: sbatch's --array for these task indices."""
    out, run = [], []
    for k in sorted(set(indices)):
        if run and k == run[-1] + 1:
            run.append(k)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [k]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    if not out:
        raise ValueError("no task indices")
    return ",".join(out)


def sbatch_argv(cfg: SlurmConfig, *, name: str, indices: Sequence[int], output: Path, script: Path) -> list[str]:
    """One ``sbatch --array`` of ``script``: one GPU (``gres``) per task, SIGUSR1 to the batch script before
    the time limit, requeue allowed (preemption with PreemptMode=REQUEUE, or the task's own request), slurm's
    own output per task (``%A_%a``); then the user's options (config.py keeps ours out of them)."""
    return ["sbatch", "--parsable", f"--job-name={name}", f"--array={array_spec(indices)}", f"--gres={cfg.gres}",
            f"--signal=B:{LIMIT_SIGNAL}@{cfg.stop_before_limit_s}", "--requeue", f"--output={output}",
            "--open-mode=append",  # a requeued task writes the same file again: keep the first attempt's lines
            *cfg.sbatch, str(script)]


def parse_job_id(stdout: str) -> str:
    """sbatch --parsable prints ``<job id>`` or ``<job id>;<cluster>``."""
    first = stdout.strip().split(";", 1)[0]
    if not first.isdigit():
        raise XTaskError(f"sbatch printed no job id: {stdout.strip()!r}")
    return first


SQUEUE_FORMAT = "%A|%F|%K|%T|%R"  # job id, array job id, array task id, state, reason or node list


def squeue_argv(user: str) -> list[str]:
    # -r: one line per array task, pending ones included (not 123_[0-23])
    return ["squeue", "-h", "-r", "-u", user, "-o", SQUEUE_FORMAT]


def parse_squeue(text: str, arrays: Iterable[str]) -> dict[tuple[str, int], Queued]:
    """{(array job id, task index): Queued} for the tasks of ``arrays`` that squeue lists and that are not
    final (those are known from their status files)."""
    wanted, out = set(arrays), {}
    for line in text.splitlines():
        cols = line.strip().split("|")
        if len(cols) != 5 or cols[1] not in wanted or not cols[2].isdigit() or cols[3] in FINAL:
            continue
        out[(cols[1], int(cols[2]))] = Queued(job=cols[0], state=cols[3], reason=cols[4])
    return out


def call(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Run a SLURM command; its stdout, or one line naming it and its error."""
    if shutil.which(argv[0], path=env.get("PATH")) is None:
        raise XTaskError(f"{argv[0]}: not found on PATH; run this on a SLURM login node (docs/slurm.md)")
    return run_command(argv, f"{shlex.join(argv[:2])} ...", env=env, timeout=120)
