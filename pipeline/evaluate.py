"""Stage `evaluate`: score the best checkpoint on the validation split -> metrics/<dataset>/xtask/seed<k>.json."""
from pathlib import Path

from xtask.evaluate import evaluate
from xtask.io import write_json

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    args = dataset_parser(__doc__, seed=True).parse_args()
    _, cfg = dataset_config(args)
    ckpt = Path("models") / cfg.name / "xtask" / f"seed{args.seed}" / "best.pt"
    result = evaluate(cfg, ckpt, device_override=args.device, progress=not args.no_progress)
    write_json(Path("metrics") / cfg.name / "xtask" / f"seed{args.seed}.json", result)
    p = result["paper"]
    print(f"{cfg.name} seed {args.seed}: mIoU {p['miou']:.2f}  PixAcc {p['pix_acc']:.2f}  "
          f"Abs {p['abs_err']:.4f}  AbsRel {p['rel_err']:.4f} (mean-depth Abs "
          f"{result['baseline_mean_depth']['paper_abs_err']:.4f})")


if __name__ == "__main__":
    run(main)
