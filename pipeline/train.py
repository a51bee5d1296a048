"""Stage `train`: train one method on one dataset with one seed; checkpoints in models/, logs in dvclive/.

Run again after a kill or a SIGTERM/SIGINT, it resumes from models/<dataset>/<method>/seed<k>/last.pt.
"""
import contextlib
import sys
from pathlib import Path

from dvclive import Live

from xtask.distributed import teardown, world_from_env
from xtask.launch import exec_if_needed
from xtask.methods import get_method
from xtask.train import resume_state, train

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    parser.add_argument("--restart", action="store_true",
                        help="ignore a saved unfinished run in the checkpoint folder and start over")
    args = parser.parse_args()
    params, cfg = dataset_config(args)
    exec_if_needed(params.launch, sys.argv[1:])  # params.yaml `launch`: docker or torchrun take over here
    world = world_from_env()
    method = get_method(args.method)
    out_dir = Path("models") / cfg.name / method.name / f"seed{args.seed}"
    resume_state(cfg, args.seed, out_dir, restart=args.restart, method=method)  # refuse before the log is touched
    log_dir = Path("dvclive") / cfg.name / method.name / f"seed{args.seed}"
    try:
        # one writer: rank 0 logs, the other ranks of a torchrun launch only compute
        with Live(str(log_dir), dvcyaml=False, save_dvc_exp=False, report=None) if world.is_main \
                else contextlib.nullcontext() as live:
            summary = train(cfg, args.seed, out_dir, device_override=args.device, live=live,
                            progress=not args.no_progress, restart=args.restart, world=world, method=method)
    finally:
        teardown(world)
    if world.is_main:
        print(f"{cfg.name} {method.name} seed {args.seed}: best epoch {summary['best_epoch']} "
              f"(val loss {summary['best_val_loss']:.5f}) on {summary['device']}"
              + (f" x {world.size} processes" if world.distributed else ""))


if __name__ == "__main__":
    run(main)
