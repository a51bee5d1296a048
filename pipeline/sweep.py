"""The table on SLURM (launch.where: slurm; docs/slurm.md): one sbatch --array, one task per dataset x method x
seed of params.yaml's run, methods and seeds, each in its own checkout; results come back as DVC experiments.

  submit     check (committed, pushed, a default DVC remote), then sbatch the array
  status     every task's state (squeue, else its status file), job, GPUs; --log NAME prints a task's log
  collect    dvc exp pull the finished tasks' experiments into this repository
  resubmit   sbatch again, as a new array, the tasks that are neither done nor in the queue
  task       the body of one array task (task.sh runs it; not for users)

status, collect and resubmit act on the newest sweep under launch.slurm.dir unless --sweep names one.
xtask/tools/sweep.py.
"""
import argparse
import os
import sys
from pathlib import Path

from xtask.common.config import load_params
from xtask.tools import sweep as tool

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("submit", "status", "collect", "resubmit", "task"))
    parser.add_argument("folder", nargs="?", type=Path, help="task: the sweep folder (task.sh passes it)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--sweep", type=Path, default=None,
                        help="the sweep folder (default: the newest under launch.slurm.dir)")
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="submit: also passed to every task's dvc exp run (repeatable), e.g. -S nyu.epochs=1")
    parser.add_argument("--log", metavar="TASK", default=None,
                        help="status: print this task's log (its name, e.g. nyu-xtask-0) instead of the table")
    parser.add_argument("--lines", type=int, default=40, help="status --log: the last this many lines (default 40)")
    args = parser.parse_args()
    if args.command == "task":
        if args.folder is None:
            parser.error("task: the sweep folder is required")
        sys.exit(tool.run_task(args.folder, os.environ))
    repo = Path.cwd()
    params = load_params(args.params)
    cfg = params.launch.slurm
    if args.command == "submit":
        tool.submit(repo, params, args.set_params, os.environ)
        return
    sweep = tool.load(args.sweep or tool.latest(repo, cfg))
    if args.command == "status":
        if args.log:
            print(tool.task_log(sweep, args.log, args.lines))
        else:
            print(f"sweep {sweep.id} ({sweep.folder}), commit {sweep.commit[:12]}")
            print(tool.format_rows(tool.rows(sweep, tool.tool_env(os.environ))))
    elif args.command == "collect":
        tool.collect(repo, sweep, os.environ)
    else:
        tool.resubmit(sweep, cfg, os.environ)


if __name__ == "__main__":
    run(main)
