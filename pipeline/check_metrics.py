"""Check that the metrics JSON in the workspace (after `dvc repro`) are the committed ones.

`make check-metrics` runs `dvc repro` first (with the committed files' CPU thread count); .ci/run calls it, so a change that moves the synthetic
metrics fails CI until the new numbers are committed. Prints one line per difference and exits 1.
"""
import argparse

from xtask.common.errors import XTaskError
from xtask.tools.metrics_check import ROOTS, RTOL, committed_metrics, compare, flatten, workspace_metrics

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rtol", type=float, default=RTOL,
                        help=f"relative tolerance per number (default {RTOL:g})")
    parser.add_argument("--rev", default="HEAD", help="the commit holding the expected metrics (default HEAD)")
    parser.add_argument("--root", action="append", dest="roots",
                        help=f"a folder of metrics JSON; repeatable (default: {' '.join(ROOTS)})")
    args = parser.parse_args()
    roots = args.roots or ROOTS
    committed = committed_metrics(".", roots, args.rev)
    if not committed:
        raise XTaskError(f"no metrics JSON under {', '.join(roots)} in {args.rev}: nothing to check against")
    diffs = compare(committed, workspace_metrics(".", roots), args.rtol)
    for d in diffs:
        print(d.line())
    if diffs:
        raise XTaskError(f"{len(diffs)} metrics differ from {args.rev}'s beyond a relative {args.rtol:g}: if the "
                         f"change is intended, commit the reproduced files ({', '.join(roots)})")
    numbers = sum(len(flatten(v)) for v in committed.values())
    print(f"metrics: {len(committed)} files, {numbers} values under {', '.join(roots)} reproduce {args.rev}'s "
          f"within a relative {args.rtol:g}")


if __name__ == "__main__":
    run(main)
