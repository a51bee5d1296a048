"""Check this installation against a folder of parity fixtures computed by the original xtask_mt code
(model, loss, metric, data and training-step parity; see xtask/tools/parity.py): one line per case with
its largest error and its tolerance (the fixtures' own, never widened); a case that cannot run fails
alone with its reason; exit 1 if a case fails or the folder holds no fixture.

    python -m pipeline.parity tests/reference/fixtures

It computes in one CPU thread, as the fixtures were made. The float32 training-step cases are judged at
their first step only (rounding moves the later ones by percents, docs/parity.md); the float64 cases run
in float64 and hold every step to the manifest's fixed tolerance.
"""
import argparse
import sys
from pathlib import Path

import torch

from xtask.common.errors import XTaskError
from xtask.tools.parity import check_folder

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a folder of *_parity.npz fixtures (searched recursively)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"parity: torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels", flush=True)
    failed = total = 0
    for case in check_folder(args.folder):
        total += 1
        failed += not case.passed
        print(case.line(), flush=True)
    if failed:
        raise XTaskError(f"{failed} of {total} parity cases in {args.folder} fail: this installation does not "
                         "compute what the original computed")
    print(f"parity: all {total} cases in {args.folder} within their tolerances")
    sys.stdout.flush()


if __name__ == "__main__":
    run(main)
