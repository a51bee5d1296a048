"""Check that the pipeline repeats itself bitwise on this machine: a short run of the synthetic default,
twice, in fresh copies of the repository with the same CPU thread count (set OMP_NUM_THREADS), every
output compared byte for byte; one line per file, exit 1 if any differs (xtask/tools/determinism.py)."""
import argparse
from pathlib import Path

import torch

from xtask.common.errors import XTaskError
from xtask.tools.determinism import check

from .cli import run


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    print(f"determinism: two short runs with {torch.get_num_threads()} CPU threads each", flush=True)
    differing = check(Path.cwd())
    if differing:
        raise XTaskError(f"{differing} outputs differ between two identical runs: the pipeline is not deterministic "
                         "on this machine")
    print("determinism: the two runs wrote identical outputs")


if __name__ == "__main__":
    run(main)
