"""Stage `train`: train XTask on one dataset with one seed; checkpoints in models/, logs in dvclive/.

Run again after a kill or a SIGTERM/SIGINT, it resumes from models/<dataset>/xtask/seed<k>/last.pt.
"""
import sys
from pathlib import Path

from dvclive import Live

from xtask.launch import exec_if_needed
from xtask.train import resume_state, train

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    parser.add_argument("--restart", action="store_true",
                        help="ignore a saved unfinished run in the checkpoint folder and start over")
    args = parser.parse_args()
    params, cfg = dataset_config(args)
    exec_if_needed(params.launch, sys.argv[1:])  # params.yaml `launch`: docker or torchrun take over here
    out_dir = Path("models") / cfg.name / "xtask" / f"seed{args.seed}"
    resume_state(cfg, args.seed, out_dir, restart=args.restart)  # refuse before the log is touched
    with Live(str(Path("dvclive") / cfg.name / "xtask" / f"seed{args.seed}"), dvcyaml=False, save_dvc_exp=False,
              report=None) as live:
        summary = train(cfg, args.seed, out_dir, device_override=args.device, live=live,
                        progress=not args.no_progress, restart=args.restart)
    print(f"{cfg.name} seed {args.seed}: best epoch {summary['best_epoch']} "
          f"(val loss {summary['best_val_loss']:.5f}) on {summary['device']}")


if __name__ == "__main__":
    run(main)
