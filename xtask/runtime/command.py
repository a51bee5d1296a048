"""Running another program (git, dvc, sbatch, podman, a pipeline stage) where its failure is the user's
problem: its stdout, or one line naming what failed and the program's last line of output."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

from xtask.common.errors import XTaskError


def last_line(text: Optional[str], default: str) -> str:
    """The last non-empty line of ``text``, or ``default``."""
    return ((text or "").strip().splitlines() or [default])[-1]


def run_command(argv: Sequence[str], what: str, *, cwd: Optional[Path] = None,
                env: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None) -> str:
    """Run ``argv`` and return its stdout; a non-zero exit raises ``what: <its last line of stderr, else of
    stdout, else its exit status>``."""
    r = subprocess.run(list(argv), cwd=cwd, env=None if env is None else dict(env), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise XTaskError(f"{what}: {last_line(r.stderr.strip() or r.stdout, f'exit status {r.returncode}')}")
    return r.stdout
