"""Check that the metrics in the workspace (after `dvc repro`) are the committed ones, each number within
its measured tolerance (benchmarks/tolerance.json; xtask/tools/metrics_check.py says how it is derived).

`make check-metrics` runs `dvc repro` first, with the committed files' CPU thread count; .ci/run calls
it, so a change that moves the synthetic metrics beyond what another CPU kind or seed could fails CI
until the new numbers are committed. Prints one line per difference and exits 1.
"""
import argparse
from pathlib import Path

from xtask.tools.metrics_check import ROOTS, check

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerances", type=Path, default=Path("benchmarks/tolerance.json"),
                        help="measured tolerance per number (default benchmarks/tolerance.json)")
    parser.add_argument("--rev", default="HEAD", help="the commit holding the expected metrics (default HEAD)")
    parser.add_argument("--root", action="append", dest="roots",
                        help=f"a folder of metrics JSON; repeatable (default: {' '.join(ROOTS)})")
    args = parser.parse_args()
    check(".", args.tolerances, args.roots or ROOTS, args.rev)


if __name__ == "__main__":
    run(main)
