"""Does the pipeline repeat itself bitwise on this machine? A short run of the synthetic default (fewer
images and epochs, the same code path: generate, prepare, train, evaluate, report), twice, each in a
fresh copy of the repository, with the same thread count; then every output is compared byte for byte
(checkpoints tensor by tensor).

This is the first of CI's two checks (docs/ci.md): it holds on any machine, whatever its CPU, and
catches nondeterminism (an unseeded generator, a race, an order that depends on the file system). The
second, the committed metrics within a measured tolerance, is ``xtask.tools.check_metrics``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
import yaml

from xtask.common.cli import run
from xtask.common.config import read_yaml
from xtask.common.errors import XTaskError
from xtask.runtime.command import run_command

COPIED = ("xtask", "pipeline", "dvc.yaml", "params.yaml", "metrics")
# The short run: 2 epochs on 16 + 8 generated images (under a minute per run on 2 cores).
SHORT = {"generate": {"seed": 0, "n_train": 16, "n_val": 8, "height": 128, "width": 256}, "optim": {"epochs": 2}}
OUTPUTS = ("data/prepared", "models", "evaluation", "metrics", "dvclive")


def copy_code(root: Path, dst: Path, names: tuple[str, ...] = COPIED) -> None:
    """``names`` (files and folders of the repository at ``root``) in ``dst``, without caches and the
    committed runs' outputs."""
    for name in names:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "seed*", "results.*",
                                                                             "summary.json", "inference.json"))
        else:
            shutil.copy(src, dst / name)


def copy_repository(root: Path, dst: Path, edit_params: Callable[[dict], None], message: str) -> None:
    """The repository's code and params in ``dst`` (without the committed runs' outputs), ``edit_params``
    applied to params.yaml, committed as a git repository with DVC: a fresh place to run the pipeline."""
    copy_code(root, dst)
    params = read_yaml(dst / "params.yaml")
    edit_params(params)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=xtask", "-c", "user.email=xtask@example.com"]
    for cmd in (git + ["init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], git + ["add", "-A"],
                git + ["commit", "-qm", message]):
        run_in(cmd, dst)


def _short_run(params: dict) -> None:
    params.update(run=["synthetic"], methods=["xtask"], seeds=[0])
    for section, values in SHORT.items():  # each of the synthetic section's sub-sections
        params["synthetic"][section].update(values)


def prepare_copy(root: Path, dst: Path) -> None:
    """The repository's code in ``dst``, a git repository with DVC, on the short run's params."""
    copy_repository(root, dst, _short_run, "short run")


def run_in(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` in ``cwd`` with this interpreter's tools first on PATH (dvc.yaml's `python`); its stdout.
    A failure is one line: the command's tail and its last line of output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return run_command(cmd, f"{' '.join(cmd[-3:])} in {cwd}", cwd=cwd, env=env)


def _files(repo: Path) -> dict[str, Path]:
    return {p.relative_to(repo).as_posix(): p for out in OUTPUTS for p in sorted((repo / out).rglob("*"))
            if p.is_file() and not p.name.endswith(("inference.json", ".lock"))}


def _same_checkpoint(a: Path, b: Path) -> bool:
    x, y = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))

    def equal(u, v) -> bool:
        if torch.is_tensor(u) or torch.is_tensor(v):
            return torch.is_tensor(u) and torch.is_tensor(v) and u.dtype == v.dtype and torch.equal(u, v)
        if isinstance(u, dict) and isinstance(v, dict):
            return u.keys() == v.keys() and all(equal(u[k], v[k]) for k in u)
        if isinstance(u, (list, tuple)) and isinstance(v, (list, tuple)):
            return len(u) == len(v) and all(equal(s, t) for s, t in zip(u, v))
        return u == v
    return equal(x, y)


def compare(first: Path, second: Path) -> Iterator[tuple[str, Optional[str]]]:
    """(file, None if identical else what differs) for every output of the two runs."""
    a, b = _files(first), _files(second)
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            yield name, f"only in the {'first' if name in a else 'second'} run"
        elif name.endswith(".pt"):
            yield name, None if _same_checkpoint(a[name], b[name]) else "tensors differ"
        else:
            yield name, None if a[name].read_bytes() == b[name].read_bytes() else "bytes differ"


def check(root: Path, report: Callable[[str], None] = print) -> int:
    """Run the short pipeline twice and compare; returns the number of differing files."""
    with tempfile.TemporaryDirectory(prefix="xtask-determinism-") as tmp:
        runs = [Path(tmp) / "first", Path(tmp) / "second"]
        for repo in runs:
            repo.mkdir()
            prepare_copy(root, repo)
            run_in([sys.executable, "-m", "dvc", "repro", "report"], repo)
        results = list(compare(*runs))
    if not results:
        raise XTaskError("the short run wrote no outputs to compare")
    for name, difference in results:
        report(f"{'same    ' if difference is None else 'DIFFERS '} {name}" + (f": {difference}" if difference else ""))
    return sum(difference is not None for _, difference in results)


USAGE = """Check that the pipeline repeats itself bitwise on this machine: a short run of the synthetic default,
twice, in fresh copies of the repository with the same CPU thread count (set OMP_NUM_THREADS), every
output compared byte for byte; one line per file, exit 1 if any differs (xtask/tools/check_determinism.py)."""


def main() -> None:
    argparse.ArgumentParser(description=USAGE).parse_args()
    print(f"determinism: two short runs with {torch.get_num_threads()} CPU threads each", flush=True)
    differing = check(Path.cwd())
    if differing:
        raise XTaskError(f"{differing} outputs differ between two identical runs: the pipeline is not deterministic "
                         "on this machine")
    print("determinism: the two runs wrote identical outputs")


if __name__ == "__main__":
    run(main)
