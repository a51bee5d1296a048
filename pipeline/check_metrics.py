"""Check that the metrics in the workspace (after `dvc repro`) are the committed ones, each number within
its measured tolerance (benchmarks/tolerance.json; xtask/tools/metrics_check.py says how it is derived).

`make check-metrics` runs `dvc repro` first, with the committed files' CPU thread count; .ci/run calls
it, so a change that moves the synthetic metrics beyond what another CPU kind or seed could fails CI
until the new numbers are committed. Prints one line per difference and exits 1.
"""
import argparse
from pathlib import Path

from xtask.common.errors import XTaskError
from xtask.tools.metrics_check import (ROOTS, closest_to_tolerance, committed_metrics, compare, load_tolerances,
                                       workspace_metrics)

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerances", type=Path, default=Path("benchmarks/tolerance.json"),
                        help="measured tolerance per number (default benchmarks/tolerance.json)")
    parser.add_argument("--rev", default="HEAD", help="the commit holding the expected metrics (default HEAD)")
    parser.add_argument("--root", action="append", dest="roots",
                        help=f"a folder of metrics JSON; repeatable (default: {' '.join(ROOTS)})")
    args = parser.parse_args()
    roots = args.roots or ROOTS
    tolerances = load_tolerances(args.tolerances)
    committed = committed_metrics(".", roots, args.rev)
    if not committed:
        raise XTaskError(f"no metrics JSON under {', '.join(roots)} in {args.rev}: nothing to check against")
    reproduced = workspace_metrics(".", roots)
    diffs = compare(committed, reproduced, tolerances)
    for d in diffs:
        print(d.line())
    if diffs:
        raise XTaskError(f"{len(diffs)} metrics differ from {args.rev}'s beyond their tolerances ({args.tolerances}): "
                         f"if the change is intended, commit the reproduced files ({', '.join(roots)})")
    numbers, equal, worst, where = closest_to_tolerance(committed, reproduced, tolerances)
    print(f"metrics: {len(committed)} files, {numbers} numbers reproduce {args.rev}'s within their tolerances; "
          f"{equal} bitwise equal" + (f", the closest at {worst:.2f} of its tolerance ({where})" if worst else ""))


if __name__ == "__main__":
    run(main)
