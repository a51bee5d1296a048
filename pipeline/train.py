"""Stage `train`: train XTask on one dataset with one seed; checkpoints in models/, logs in dvclive/."""
from pathlib import Path

from dvclive import Live

from xtask.train import train

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    args = dataset_parser(__doc__, seed=True).parse_args()
    _, cfg = dataset_config(args)
    out_dir = Path("models") / cfg.name / "xtask" / f"seed{args.seed}"
    with Live(str(Path("dvclive") / cfg.name / "xtask" / f"seed{args.seed}"), dvcyaml=False, save_dvc_exp=False,
              report=None) as live:
        summary = train(cfg, args.seed, out_dir, device_override=args.device, live=live,
                        progress=not args.no_progress)
    print(f"{cfg.name} seed {args.seed}: best epoch {summary['best_epoch']} "
          f"(val loss {summary['best_val_loss']:.5f}) on {summary['device']}")


if __name__ == "__main__":
    run(main)
