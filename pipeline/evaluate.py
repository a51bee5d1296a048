"""Stage `evaluate`: score a checkpoint on the validation split -> --out (metrics JSON), and save its
predictions on the first validation images -> --examples (the figure stage draws them).

The checkpoint may be the train stage's best.pt or the original xtask_mt's model.pth (detected from
its content).
"""
from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.common.io import write_json
from xtask.common.methods import get_method
from xtask.evaluation.evaluate import evaluate


def main() -> None:
    parser = dataset_parser(__doc__, seed=True)
    path_arg(parser, "--data", "the prepared dataset folder (the prepare stage's output)")
    path_arg(parser, "--checkpoint", "the checkpoint to score (the train stage's best.pt, or a model.pth)")
    path_arg(parser, "--out", "the metrics JSON to write")
    path_arg(parser, "--examples", "where to save the predictions on the first validation images, for "
             "`python -m pipeline.figure` (optional)", required=False)
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    method = get_method(args.method)
    result = evaluate(cfg, args.checkpoint, args.data, device_override=args.device, progress=not args.no_progress,
                      examples_path=args.examples, method=method)
    write_json(args.out, result)
    p = result["paper"]
    scores = [f"{label} {p[key]:{fmt}}" for key, label, fmt in
              (("miou", "mIoU", ".2f"), ("pix_acc", "PixAcc", ".2f"), ("abs_err", "Abs", ".4f"),
               ("rel_err", "AbsRel", ".4f")) if key in p]
    baseline = result.get("baseline_mean_depth")
    print(f"{cfg.name} {method.name} seed {args.seed}: {'  '.join(scores)}"
          + (f" (mean-depth Abs {baseline['paper_abs_err']:.4f})" if baseline else "")
          + (f"; examples {args.examples}" if args.examples else ""))


if __name__ == "__main__":
    run(main)
