"""Are the committed metrics what the code reproduces? Committed (git) against workspace metrics JSON,
within tolerances measured for each number (``benchmarks/tolerance.json``).

A 12-epoch run amplifies any change of rounding: the same code on another CPU kind, or with another
instruction set or thread count, ends up to a mIoU point or more away (benchmarks/cross-cpu,
benchmarks/README.md). So each number is held to a tolerance measured on the synthetic default: 3
times its standard deviation over seeds, and at least twice the largest move seen with other CPU
kernels or on another CPU kind (``benchmarks/analyse_runs.py`` derives them from ``benchmarks/runs``). A number without a
measured tolerance, and everything that is not a number, must be equal. Timings (``inference.json``)
are measured, not reproduced, and the report's tables are derived from the checked files: neither is
compared. Whether the code repeats itself bitwise on one machine is the other check
(``xtask.tools.check_determinism``).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from xtask.common.cli import run
from xtask.common.errors import XTaskError

# where the evaluate stage writes its per-run JSON: plain outputs with `cache: false` in dvc.yaml, so in
# git (what this compares against) though no DVC metric (that is metrics/summary.json). The train stage's
# dvclive log is a cached output (DVC's run-cache needs that), so not in git: the scores of its model
# are what is checked.
ROOTS = ("metrics",)
MISSING = "(missing)"
# The files compared: what the evaluate stage writes (the rest is measured or derived).
CHECKED = re.compile(r"metrics/[^/]+/[^/]+/seed\d+\.json$")
Tolerances = Mapping[str, Mapping[str, float]]  # file (seed<k> as seedK) -> dotted key -> absolute tolerance


# The run's identity (xtask/evaluation/identity.py): the code hashes change with every commit that touches the
# code, and the id hashes them, while the numbers may well reproduce; so neither is compared. The params in
# ``config`` are compared, exactly (they are settings, not measurements).
NOT_COMPARED = ("config_id", "config.code", "config.evaluation_code")


def tolerance_name(file: str) -> str:
    """The name a file has in the tolerance file: every run's seed<k> is seedK."""
    return re.sub(r"seed\d+", "seedK", file)


def _reproducible(name: str) -> bool:
    return CHECKED.search(name) is not None


@dataclass(frozen=True)
class Difference:
    file: str
    key: str          # dotted path into the JSON ("paper.miou"), "" for the whole file
    committed: Any
    reproduced: Any
    tolerance: Optional[float] = None  # the number's measured tolerance; None: compared exactly

    def line(self) -> str:
        key = f" {self.key}:" if self.key else ""
        text = f"{self.file}:{key} committed {self.committed!r}, reproduced {self.reproduced!r}"
        if _is_number(self.committed) and _is_number(self.reproduced):
            limit = f"tolerance {self.tolerance:.3g}" if self.tolerance is not None else \
                "no measured tolerance: must be equal"
            text += f" (|difference| {abs(self.committed - self.reproduced):.3g}; {limit})"
        return text


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


def same_value(a: Any, b: Any, tolerance: Optional[float] = None) -> bool:
    """Numbers within ``tolerance`` (absolute; None: equal), NaN equal to NaN; anything else equal."""
    if _is_number(a) and _is_number(b):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b if tolerance is None else abs(a - b) <= tolerance
    return type(a) is type(b) and a == b


def compare(committed: Mapping[str, Any], reproduced: Mapping[str, Any], tolerances: Tolerances
            ) -> list[Difference]:
    """Differences between two {file: parsed JSON} maps; a file or key on one side only is one too."""
    diffs = []
    for file in sorted(set(committed) | set(reproduced)):
        if file not in reproduced:
            diffs.append(Difference(file, "", "present", MISSING))
            continue
        if file not in committed:
            diffs.append(Difference(file, "", MISSING, "present"))
            continue
        measured = tolerances.get(tolerance_name(file), {})
        old, new = flatten(committed[file]), flatten(reproduced[file])
        for key in sorted((set(old) | set(new)) - set(NOT_COMPARED)):
            a, b = old.get(key, MISSING), new.get(key, MISSING)
            if key not in old or key not in new or not same_value(a, b, measured.get(key)):
                diffs.append(Difference(file, key, a, b, measured.get(key)))
    return diffs


def load_tolerances(path: str | Path) -> Tolerances:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise XTaskError(f"{path}: missing or not a tolerance file ({type(err).__name__}); "
                         "benchmarks/analyse_runs.py writes it") from None
    return files


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


def closest_to_tolerance(committed: Mapping[str, Any], reproduced: Mapping[str, Any], tolerances: Tolerances
                         ) -> tuple[int, int, float, str]:
    """(numbers compared, numbers bitwise equal, the largest |difference| / tolerance, where) of files
    present on both sides."""
    numbers = equal = 0
    worst, where = 0.0, ""
    for file in set(committed) & set(reproduced):
        measured = tolerances.get(tolerance_name(file), {})
        old, new = flatten(committed[file]), flatten(reproduced[file])
        for key in set(old) & set(new):
            a, b = old[key], new[key]
            if not (_is_number(a) and _is_number(b)):
                continue
            numbers += 1
            equal += a == b
            tol = measured.get(key)
            if tol and a == a and b == b and abs(a - b) / tol > worst:
                worst, where = abs(a - b) / tol, f"{file}: {key}"
    return numbers, equal, worst, where


def check(repo: str | Path, tolerance_file: str | Path, roots: Iterable[str] = ROOTS, rev: str = "HEAD",
          reproduced_in: str | Path | None = None, say: Callable[[str], None] = print) -> None:
    """CI's check (``xtask.tools.check_metrics``): the reproduced metrics against ``rev``'s in ``repo``, each number
    within its tolerance. They are read from ``repo``'s working tree, or from ``reproduced_in``, a folder laid
    out like it (``make image-test`` copies them out of a container). Says one line per difference and
    raises; else says how close they came."""
    roots = list(roots)
    tolerances = load_tolerances(tolerance_file)
    committed = committed_metrics(repo, roots, rev)
    if not committed:
        raise XTaskError(f"no metrics JSON under {', '.join(roots)} in {rev}: nothing to check against")
    reproduced = workspace_metrics(repo if reproduced_in is None else reproduced_in, roots)
    diffs = compare(committed, reproduced, tolerances)
    for d in diffs:
        say(d.line())
    if diffs:
        raise XTaskError(f"{len(diffs)} metrics differ from {rev}'s beyond their tolerances ({tolerance_file}): "
                         f"if the change is intended, commit the reproduced files ({', '.join(roots)})")
    numbers, equal, worst, where = closest_to_tolerance(committed, reproduced, tolerances)
    say(f"metrics: {len(committed)} files, {numbers} numbers reproduce {rev}'s within their tolerances; "
        f"{equal} bitwise equal" + (f", the closest at {worst:.2f} of its tolerance ({where})" if worst else ""))


USAGE = """Check that the metrics in the workspace (after `dvc repro`) are the committed ones, each number within
its measured tolerance (benchmarks/tolerance.json; xtask/tools/check_metrics.py says how it is derived).

`make check-metrics` runs `dvc repro` first, with the committed files' CPU thread count; .ci/run calls
it, so a change that moves the synthetic metrics beyond what another CPU kind or seed could fails CI
until the new numbers are committed. Prints one line per difference and exits 1.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE)
    parser.add_argument("--tolerances", type=Path, default=Path("benchmarks/tolerance.json"),
                        help="measured tolerance per number (default benchmarks/tolerance.json)")
    parser.add_argument("--rev", default="HEAD", help="the commit holding the expected metrics (default HEAD)")
    parser.add_argument("--root", action="append", dest="roots",
                        help=f"a folder of metrics JSON; repeatable (default: {' '.join(ROOTS)})")
    args = parser.parse_args()
    check(".", args.tolerances, args.roots or ROOTS, args.rev)


if __name__ == "__main__":
    run(main)
