"""Stage `train`: train one method on one dataset with one seed -> --out/best.pt, per-epoch log (dvclive) in --live.

Run again after a kill or a SIGTERM/SIGINT, it resumes from its state in --scratch (written at most every
--save-every seconds, and at the signal); the state is removed once the run finished.
"""
import contextlib
import sys

from dvclive import Live

from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.common.config import replace
from xtask.common.methods import get_method
from xtask.core.distributed import teardown, world_from_env
from xtask.core.hardware import require_device
from xtask.runtime.launch import exec_if_needed
from xtask.training.train import SAVE_EVERY_S, Storage, train


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    path_arg(parser, "--data", "the prepared dataset folder (the prepare stage's output)")
    path_arg(parser, "--out", "the model folder: best.pt is written there when the run finished")
    path_arg(parser, "--live", "the dvclive folder of the per-epoch log")
    parser.add_argument("--scratch", default="scratch",
                        help="folder of resumable states, one subfolder per run (default scratch)")
    parser.add_argument("--save-every", type=float, default=SAVE_EVERY_S, metavar="SECONDS",
                        help=f"write the resumable state at most this often (default {SAVE_EVERY_S:g}; "
                             "also at SIGTERM/SIGINT)")
    parser.add_argument("--restart", action="store_true", help="discard a saved state of this run and start over")
    args = parser.parse_args()
    params, cfg = dataset_config(args)
    exec_if_needed(params.launch, sys.argv[1:])  # params.yaml `launch`: docker or torchrun take over here
    # here, where training runs (inside the container, not on its host): a cuda run never falls to the CPU
    require_device(args.device or cfg.runtime.device,
                   "--device" if args.device else f"params.yaml: {cfg.name}.runtime.device")
    if args.device:
        cfg = replace(cfg, device=args.device)
    world = world_from_env()
    method = get_method(args.method)
    try:
        # one writer: rank 0 logs, the other ranks of a torchrun launch only compute
        with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) if world.is_main \
                else contextlib.nullcontext() as live:
            storage = Storage(args.data, args.out, args.scratch, save_every_s=args.save_every, restart=args.restart)
            summary = train(cfg, method, args.seed, storage, world=world, live=live, progress=not args.no_progress)
    finally:
        teardown(world)
    if world.is_main:
        print(f"{cfg.name} {method.name} seed {args.seed}: best epoch {summary['best_epoch']} "
              f"(val loss {summary['best_val_loss']:.5f}) on {summary['device']}"
              + (f" x {world.size} processes" if world.distributed else ""))


if __name__ == "__main__":
    run(main)
