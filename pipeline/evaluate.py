"""Stage `evaluate`: score the best checkpoint on the validation split -> metrics/<dataset>/xtask/seed<k>.json,
and draw its first validation images with every prediction -> metrics/<dataset>/xtask/seed<k>_examples.png.

--checkpoint scores another file instead, this project's or the original xtask_mt's model.pth
(detected from its content); it needs --out, so that the stage's own metrics are not overwritten.
"""
from pathlib import Path

from xtask.evaluate import evaluate
from xtask.io import write_json

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to score (default models/<dataset>/xtask/seed<k>/best.pt)")
    parser.add_argument("--out", type=Path, default=None,
                        help="metrics JSON (default metrics/<dataset>/xtask/seed<k>.json)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="qualitative figure PNG (default: the metrics path with _examples.png)")
    args = parser.parse_args()
    if args.checkpoint is not None and args.out is None:
        parser.error("--checkpoint needs --out (the default metrics path belongs to the pipeline's checkpoint)")
    _, cfg = dataset_config(args)
    run_dir = Path("models") / cfg.name / "xtask" / f"seed{args.seed}"
    ckpt = args.checkpoint or run_dir / "best.pt"
    out = args.out or Path("metrics") / cfg.name / "xtask" / f"seed{args.seed}.json"
    figure = args.figure or out.with_name(f"{out.stem}_examples.png")
    result = evaluate(cfg, ckpt, device_override=args.device, progress=not args.no_progress, figure_path=figure)
    write_json(out, result)
    p = result["paper"]
    print(f"{cfg.name} seed {args.seed}: mIoU {p['miou']:.2f}  PixAcc {p['pix_acc']:.2f}  "
          f"Abs {p['abs_err']:.4f}  AbsRel {p['rel_err']:.4f} (mean-depth Abs "
          f"{result['baseline_mean_depth']['paper_abs_err']:.4f}); figure {figure}")


if __name__ == "__main__":
    run(main)
