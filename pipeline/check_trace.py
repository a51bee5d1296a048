"""CI's tight check of what training computes: the first optimiser steps of the default config in float64,
from fixed weights on fixed batches, for every loss, balancing and protocol variant (xtask/tools/trace.py),
against the committed trace, each recorded value within a fixed relative tolerance (1e-9). Seconds on a
CPU; any x86-64 CPU reproduces the trace to rounding, a one-line change of a loss, a balancer or the
protocol does not (docs/ci.md).

    python -m pipeline.check_trace            # compare with tests/trace_f64.json, exit 1 on a difference
    python -m pipeline.check_trace --write    # after an intended change: write the trace to commit
"""
import argparse
import math
from pathlib import Path

import torch

from xtask.common.config import load_params
from xtask.common.errors import XTaskError
from xtask.common.io import write_json
from xtask.tools import trace

from .cli import run

DEFAULT = Path("tests/trace_f64.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, default=DEFAULT, help=f"the committed trace (default {DEFAULT})")
    parser.add_argument("--dataset", default="synthetic", help="the params.yaml section traced (default synthetic)")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default params.yaml)")
    parser.add_argument("--write", action="store_true", help="write the trace instead of comparing with it")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help=f"only these variants (default all: {', '.join(trace.VARIANTS)})")
    args = parser.parse_args()
    names = args.variants or list(trace.VARIANTS)
    for name in names:
        if name not in trace.VARIANTS:
            raise XTaskError(f"--variants: {name} is not a variant ({', '.join(trace.VARIANTS)})")
    if args.write and args.variants:
        raise XTaskError("--write writes every variant: leave out --variants")
    cfg = load_params(args.params).dataset(args.dataset)
    want = None if args.write else trace.load(args.trace)  # a missing trace fails before the minute of work
    variants = {n: trace.VARIANTS[n] for n in names}
    print(f"trace: {len(variants)} variants x {trace.STEPS} steps of {cfg.name} in float64, "
          f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()} kernels", flush=True)
    got = trace.compute(cfg, variants)
    if args.write:
        write_json(args.trace, got)
        print(f"trace: wrote {args.trace}")
        return
    want = {**want, "variants": {n: v for n, v in want.get("variants", {}).items() if n in variants}}
    rows = list(trace.differences(got, want))
    tolerance = float(want.get("tolerance", trace.TOLERANCE))
    bad = [(where, err) for where, err in rows if not err <= tolerance]
    worst = max(rows, key=lambda r: r[1] if math.isfinite(r[1]) else math.inf)
    for where, err in bad[:20]:
        print(f"FAIL {where}: relative difference {err:.3g} > {tolerance:.0e}")
    if bad:
        raise XTaskError(f"{len(bad)} of {len(rows)} traced values differ from {args.trace} beyond {tolerance:.0e}: "
                         "training computes something else; if intended, rerun with --write and commit the trace")
    print(f"trace: all {len(rows)} values within {tolerance:.0e} of {args.trace} (largest {worst[1]:.3g}, {worst[0]})")


if __name__ == "__main__":
    run(main)
