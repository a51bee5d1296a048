"""Are the committed metrics what the code reproduces? Committed (git) against workspace metrics JSON.

The synthetic run is deterministic on a CPU, so after `dvc repro` every number in the workspace's metrics
files should equal the committed one; a change of code that moves them without committing the new
numbers is a difference. Numbers compare within a relative tolerance (float printing, libraries'
summation order); everything else compares exactly.
"""
from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from xtask.common.errors import XTaskError

RTOL = 1e-3        # relative, per number
ATOL = 1e-12       # so that 0.0 against 1e-17 is not a difference
ROOTS = ("metrics", "dvclive")  # where dvc.yaml's metrics files live
MISSING = "(missing)"
# measured, not reproduced: timings differ run to run (the inference_time stage's output)
MEASURED = ("inference.json",)


def _reproducible(name: str) -> bool:
    return name.endswith(".json") and Path(name).name not in MEASURED


@dataclass(frozen=True)
class Difference:
    file: str
    key: str          # dotted path into the JSON ("paper.miou"), "" for the whole file
    committed: Any
    reproduced: Any

    def line(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.file}:{key} committed {self.committed!r}, reproduced {self.reproduced!r}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [1, 2]}} -> {"a.b.0": 1, "a.b.1": 2}; an empty dict or list stays a leaf."""
    if isinstance(obj, dict) and obj:
        items = obj.items()
    elif isinstance(obj, list) and obj:
        items = enumerate(obj)
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same_value(a: Any, b: Any, rtol: float = RTOL) -> bool:
    if _is_number(a) and _is_number(b):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rtol, abs_tol=ATOL)
    return type(a) is type(b) and a == b


def compare(committed: Mapping[str, Any], reproduced: Mapping[str, Any], rtol: float = RTOL) -> list[Difference]:
    """Differences between two {file: parsed JSON} maps; a file or key on one side only is one too."""
    diffs = []
    for file in sorted(set(committed) | set(reproduced)):
        if file not in reproduced:
            diffs.append(Difference(file, "", "present", MISSING))
            continue
        if file not in committed:
            diffs.append(Difference(file, "", MISSING, "present"))
            continue
        old, new = flatten(committed[file]), flatten(reproduced[file])
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key, MISSING), new.get(key, MISSING)
            if key not in old or key not in new or not same_value(a, b, rtol):
                diffs.append(Difference(file, key, a, b))
    return diffs


def _parse(file: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise XTaskError(f"{file}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["failed"])[-1]
        raise XTaskError(f"git {' '.join(args)}: {last}")
    return r.stdout


def committed_metrics(repo: str | Path = ".", roots: Iterable[str] = ROOTS, rev: str = "HEAD") -> dict[str, Any]:
    """{path: parsed JSON} of every ``*.json`` under ``roots`` in the commit ``rev``."""
    repo = Path(repo)
    names = _git(repo, "ls-tree", "-r", "--name-only", rev, "--", *roots).splitlines()
    return {n: _parse(f"{rev}:{n}", _git(repo, "show", f"{rev}:{n}")) for n in names if _reproducible(n)}


def workspace_metrics(repo: str | Path = ".", roots: Iterable[str] = ROOTS) -> dict[str, Any]:
    """{path: parsed JSON} of every ``*.json`` under ``roots`` in the working tree."""
    repo = Path(repo)
    out = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.json")):
            name = path.relative_to(repo).as_posix()
            if _reproducible(name):
                out[name] = _parse(name, path.read_text())
    return out
