"""Stage `evaluate`: score the best checkpoint on the validation split -> metrics/<dataset>/<method>/seed<k>.json,
and draw its first validation images with every prediction -> metrics/<dataset>/<method>/seed<k>_examples.png.

--checkpoint scores another file instead, this project's or the original xtask_mt's model.pth
(detected from its content); it needs --out, so that the stage's own metrics are not overwritten.
"""
from pathlib import Path

from xtask.evaluate import evaluate
from xtask.io import write_json
from xtask.methods import get_method

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint to score (default models/<dataset>/<method>/seed<k>/best.pt)")
    parser.add_argument("--out", type=Path, default=None,
                        help="metrics JSON (default metrics/<dataset>/<method>/seed<k>.json)")
    parser.add_argument("--figure", type=Path, default=None,
                        help="qualitative figure PNG (default: the metrics path with _examples.png)")
    args = parser.parse_args()
    if args.checkpoint is not None and args.out is None:
        parser.error("--checkpoint needs --out (the default metrics path belongs to the pipeline's checkpoint)")
    _, cfg = dataset_config(args)
    method = get_method(args.method)
    run_dir = Path("models") / cfg.name / method.name / f"seed{args.seed}"
    ckpt = args.checkpoint or run_dir / "best.pt"
    out = args.out or Path("metrics") / cfg.name / method.name / f"seed{args.seed}.json"
    figure = args.figure or out.with_name(f"{out.stem}_examples.png")
    result = evaluate(cfg, ckpt, device_override=args.device, progress=not args.no_progress, figure_path=figure,
                      method=method)
    write_json(out, result)
    p = result["paper"]
    scores = [f"{label} {p[key]:{fmt}}" for key, label, fmt in
              (("miou", "mIoU", ".2f"), ("pix_acc", "PixAcc", ".2f"), ("abs_err", "Abs", ".4f"),
               ("rel_err", "AbsRel", ".4f")) if key in p]
    baseline = result.get("baseline_mean_depth")
    print(f"{cfg.name} {method.name} seed {args.seed}: {'  '.join(scores)}"
          + (f" (mean-depth Abs {baseline['paper_abs_err']:.4f})" if baseline else "") + f"; figure {figure}")


if __name__ == "__main__":
    run(main)
