"""What every stage entry point shares: argument parsing and turning user errors into one line.

Paths of a stage's inputs and outputs are arguments: dvc.yaml passes them, so that where a stage reads
and writes is said in one place (the stage's ``deps`` and ``outs``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn

from xtask.common.config import DatasetConfig, Params, load_params
from xtask.common.errors import XTaskError
from xtask.common.methods import METHODS


def dataset_parser(description: str, *, seed: bool = False, method: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("dataset", help="a dataset section of params.yaml (synthetic, cityscapes, nyu)")
    if seed and method:
        parser.add_argument("--method", choices=tuple(METHODS), default="xtask",
                            help="xtask (the paper), mtl (no TaskTransferNets), stl_seg or stl_depth (default xtask)")
    if seed:
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                            help="override the params' device")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def path_arg(parser: argparse.ArgumentParser, flag: str, what: str, *, required: bool = True) -> None:
    parser.add_argument(flag, type=Path, required=required, help=what)


def dataset_config(args: argparse.Namespace) -> tuple[Params, DatasetConfig]:
    params = load_params(args.params)
    return params, params.dataset(args.dataset)


def run(main: Callable[[], None]) -> NoReturn:
    """Run ``main``; a user error becomes one line on stderr and exit status 1, Ctrl-C status 130."""
    try:
        main()
    except XTaskError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(0)
