"""The paper's table shape on stand-in data, through the routes a user takes (`make rehearse`).

In a fresh git + DVC copy of the repository:

1. stand-in raw data in both on-disk formats: the synthetic scenes as Cityscapes' PNG folders in
   ``data/cityscapes`` and as MTAN's NYUv2 ``.npy`` layout in ``data/nyu`` (both git-ignored, as the real
   data is);
2. the real ``cityscapes`` and ``nyu`` sections, changed by ``-S`` overrides only (tiny size, 2 epochs,
   ResNet18, the CPU): ``dvc exp run -S ... generate prepare@cityscapes prepare@nyu``, then the params and
   the lock committed, as docs/gpus.md prepares the table;
3. every dataset x method x seed as its own queued experiment (``dvc exp run --queue -S run=[..] -S
   methods=[..] -S seeds=[..] --allow-missing``, docs/gpus.md's loop), run by ``dvc queue start``;
4. ``dvc repro`` of the whole table in the workspace: every training comes back from DVC's run-cache that
   the queue filled (none runs again), and the report writes both datasets' rows with delta_m;
5. a push to a folder remote, a fresh clone that pulls, and ``dvc repro --allow-missing`` there, which
   must run nothing (the raw data is absent in a clone: prepare's dependency is missing, not changed).

Each step's failure is one line naming the step. The numbers mean nothing (2 epochs on a dozen images);
the routes are what is rehearsed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

from xtask.common.cli import run
from xtask.common.errors import XTaskError
from xtask.common.methods import METHODS
from xtask.data.synthetic import generate, generate_nyu
from xtask.tools.check_determinism import copy_repository, run_in

DATASETS = ("cityscapes", "nyu")
SEEDS = (0, 1)
# What -S changes in the paper's sections: a size that trains in seconds on a CPU, on the stand-in data.
TINY = {"data.height": 32, "data.width": 64, "data.expect_full_size": "false", "optim.epochs": 2,
        "optim.batch_size": 4, "optim.scheduler_step_size": 1, "model.enc_layers": 18, "model.decoder_width": 8,
        "model.ttnet_width": 4, "runtime.workers": 0, "runtime.device": "cpu"}
RAW = {"n_train": 8, "n_val": 4, "height": 64, "width": 128}  # stand-in images per split, and their size
JOBS = 2  # queue workers: the 2 cores of the machine this was sized on, one thread each
QUEUE_DEADLINE_S = 1800
GIT = ["git", "-c", "user.name=xtask", "-c", "user.email=xtask@example.com"]
DVC = [sys.executable, "-m", "dvc"]


def overrides() -> list[str]:
    """The -S arguments that make the paper's sections the rehearsal's: nothing else in params.yaml changes."""
    table = [f"run=[{','.join(DATASETS)}]", f"methods=[{','.join(METHODS)}]", f"seeds=[{','.join(map(str, SEEDS))}]"]
    # the generate stage is in every pipeline: its (unused) synthetic set at a few images, not 400
    generate_small = [f"synthetic.generate.{k}={v}" for k, v in (("n_train", 2), ("n_val", 2), ("height", 64),
                                                                  ("width", 128))]
    return table + generate_small + [f"{ds}.{k}={v}" for ds in DATASETS for k, v in TINY.items()]


def experiments() -> list[tuple[str, list[str]]]:
    """(name, -S arguments) of every queued run: one dataset, method and seed each."""
    return [(f"{ds}-{m}-{s}", [f"run=[{ds}]", f"methods=[{m}]", f"seeds=[{s}]"])
            for ds in DATASETS for m in METHODS for s in SEEDS]


def _set(args: list[str]) -> list[str]:
    return [w for a in args for w in ("-S", a)]


def _queue_statuses(repo: Path) -> dict[str, str]:
    out = run_in(DVC + ["queue", "status"], repo)
    names = {name for name, _ in experiments()}
    return {cols[1]: cols[-1] for cols in (line.split() for line in out.splitlines())
            if len(cols) >= 2 and cols[1] in names}


def rehearse(root: Path, work: Path, say: Callable[[str], None] = print,
             deadline_s: float = QUEUE_DEADLINE_S) -> dict[str, str]:
    """Run the rehearsal in ``work`` (an empty folder); returns {results.md, queue status, clone repro}."""
    origin, remote, clone = work / "origin", work / "remote", work / "clone"
    origin.mkdir(parents=True)
    start = time.monotonic()

    def step(what: str) -> None:
        say(f"rehearse [{time.monotonic() - start:5.0f}s] {what}")

    step("copy of the repository, stand-in raw data in both formats")
    copy_repository(root, origin, lambda params: None, "the repository as it is")
    shutil.copy(root / ".gitignore", origin / ".gitignore")  # the raw data stays out of git, as a user's
    generate(origin / "data/cityscapes", seed=11, **RAW)
    generate_nyu(origin / "data/nyu", seed=12, **RAW)
    run_in(GIT + ["add", "-A"], origin)
    run_in(GIT + ["commit", "-qm", ".gitignore"], origin)
    if run_in(["git", "ls-files", "data"], origin).strip():
        raise XTaskError("rehearse: git tracks files under data/ in the copy: the raw data would enter the queue")

    step("prepare both datasets with -S overrides only, commit params and lock (docs/gpus.md)")
    run_in(DVC + ["exp", "run", "-n", "prepared", *_set(overrides()), "generate", "prepare@cityscapes",
                  "prepare@nyu"], origin)
    run_in(GIT + ["add", "params.yaml", "dvc.lock"], origin)
    run_in(GIT + ["commit", "-qm", "prepared cityscapes and nyu (stand-in data)"], origin)

    step(f"queue {len(experiments())} experiments, start {JOBS} workers")
    for name, args in experiments():
        run_in(DVC + ["exp", "run", "--queue", "-n", name, *_set(args), "--allow-missing"], origin)
    with open(origin / ".dvc/tmp/queue-start.log", "w") as log:
        # the workers inherit the output: a file, not a pipe, or waiting for EOF would wait for the queue
        r = subprocess.run(DVC + ["queue", "start", "-j", str(JOBS)], cwd=origin, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    if r.returncode != 0:
        raise XTaskError(f"rehearse: dvc queue start failed; see {origin / '.dvc/tmp/queue-start.log'}")
    statuses: dict[str, str] = {}
    try:
        while time.monotonic() - start < deadline_s:
            statuses = _queue_statuses(origin)
            if statuses and all(s not in ("Queued", "Running") for s in statuses.values()):
                break
            time.sleep(5)
        queue_status = run_in(DVC + ["queue", "status"], origin)
    finally:
        subprocess.run(DVC + ["queue", "stop", "--kill"], cwd=origin, capture_output=True)
    failed = sorted(n for n, s in statuses.items() if s != "Success")
    if failed or len(statuses) != len(experiments()):
        logs = run_in(DVC + ["queue", "logs", failed[0]], origin).strip().splitlines()[-1:] if failed else []
        raise XTaskError(f"rehearse: queued experiments not all done: {failed or 'some missing'}"
                         + (f"; {failed[0]}'s last line: {logs[0]}" if logs else ""))

    step("dvc repro of the whole table in the workspace: trainings from the run-cache, then the report")
    repro = run_in(DVC + ["repro"], origin)
    retrained = re.findall(r"Running stage '(train@[^']+)'", repro)
    if retrained:
        raise XTaskError(f"rehearse: the queue's trainings did not come back from the run-cache: {retrained}")
    results = (origin / "metrics/results.md").read_text()

    step("push to a folder remote, clone, pull, repro: nothing may run")
    run_in(DVC + ["remote", "add", "-d", "store", str(remote)], origin)
    run_in(GIT + ["add", "-A"], origin)
    run_in(GIT + ["commit", "-qm", "the table on stand-in data"], origin)
    run_in(DVC + ["push"], origin)
    run_in(["git", "clone", "-q", str(origin), str(clone)], work)
    run_in(DVC + ["pull", "--allow-missing"], clone)
    again = run_in(DVC + ["repro", "--allow-missing"], clone)
    if "Running stage" in again:
        raise XTaskError("rehearse: the clone reran stages: "
                         + ", ".join(re.findall(r"Running stage '([^']+)'", again)))
    if run_in(["git", "status", "--porcelain"], clone).strip():
        raise XTaskError("rehearse: repro in the clone changed tracked files")
    step("done")
    return {"results": results, "queue_status": queue_status, "clone_repro": again}


def check_report(results: str) -> Optional[str]:
    """What the rehearsal's results.md lacks (None: both datasets, every method, 2 seeds, delta_m)."""
    for ds in DATASETS:
        section = results.split(f"## {ds}\n", 1)[-1].split("\n## ", 1)[0]
        for m in METHODS:
            if not re.search(rf"^\| {m} \| reproduced, protocol original \| paper \(per-image\) \| 2 \(0, 1\) \|",
                             section, re.M):
                return f"{ds}: no {m} row of 2 seeds"
        if not re.search(r"^\| xtask \| reproduced.*\| [+\u2212]\d+\.\d\d ± \d+\.\d\d \|", section, re.M):
            return f"{ds}: no delta_m on the xtask row"
    return None


USAGE = """`make rehearse`: the paper's table shape on stand-in data through the routes users take (stand-in raw data
in both formats, the real sections with -S overrides, every run queued, the report, a remote and a clone
that reproduces nothing); xtask/tools/rehearse.py. Prints the results table and `dvc queue status`."""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE)
    parser.add_argument("--keep", type=Path, default=None,
                        help="an empty or new folder to rehearse in and keep (default: a temporary one, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtask-rehearse-") as tmp:
        work = args.keep or Path(tmp)
        if work.exists() and any(work.iterdir()):
            raise XTaskError(f"{work}: not empty; --keep wants an empty or new folder")
        out = rehearse(Path.cwd(), work, say=lambda line: print(line, flush=True))
    print(out["results"])
    print(out["queue_status"])
    missing = check_report(out["results"])
    if missing:
        raise XTaskError(f"rehearse: the report lacks what the table needs: {missing}")
    print("rehearse: every route worked")


if __name__ == "__main__":
    run(main)
