"""The DVC remote story (docs/dvc.md, "Sharing data and models"): push a finished run to a remote, and a
fresh clone that pulls it has nothing left to reproduce, training included.

What is compared is what DVC reports and the files' bytes between the clone and the origin, never numbers
against constants: the check holds whatever a CPU's rounding makes of the short run.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from xtask.tools.check_determinism import OUTPUTS, prepare_copy, run_in

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
DVC = [sys.executable, "-m", "dvc"]
UP_TO_DATE = "Data and pipelines are up to date."


def _digests(repo: Path) -> dict[str, str]:
    """{path: sha256} of every file the pipeline writes (data, models, metrics, curves)."""
    return {p.relative_to(repo).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for out in OUTPUTS + ("data/synthetic",) for p in sorted((repo / out).rglob("*")) if p.is_file()}


@pytest.mark.slow  # the short run, then a clone and a pull: about 2 minutes on 2 shared cores
def test_remote_round_trip_a_clone_that_pulls_trains_nothing(tmp_path):
    origin, remote, clone = tmp_path / "origin", tmp_path / "remote", tmp_path / "clone"
    origin.mkdir()
    prepare_copy(ROOT, origin)  # the short run's params, in a git repository with DVC
    run_in(DVC + ["repro"], origin)
    run_in(DVC + ["remote", "add", "-d", "store", str(remote)], origin)
    run_in(GIT + ["add", "-A"], origin)
    run_in(GIT + ["commit", "-qm", "short run, dvc.lock and the remote"], origin)
    run_in(DVC + ["push"], origin)
    assert any(p.is_file() for p in remote.rglob("*")), "dvc push wrote nothing to the remote"

    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True, capture_output=True)
    assert not list(clone.glob("models/**/*.pt"))  # git carries no model (only DVC's .gitignore): the remote does
    run_in(DVC + ["pull"], clone)
    assert run_in(DVC + ["status"], clone).strip() == UP_TO_DATE

    repro = run_in(DVC + ["repro"], clone)
    assert "Running stage" not in repro, repro
    assert "Stage 'train@synthetic-xtask-0' didn't change, skipping" in repro, repro
    assert run_in(DVC + ["status"], clone).strip() == UP_TO_DATE
    # the same files, byte for byte: models, prepared data, metrics and curves came from the remote and git
    assert _digests(clone) == _digests(origin)
    assert any(name.startswith("models/") for name in _digests(clone))
    assert run_in(GIT + ["status", "--porcelain"], clone) == ""  # and repro changed nothing tracked
