"""Stage `figure`: draw the qualitative figure (image, targets, direct and transferred predictions of the
first validation images) from the evaluate stage's --examples file -> --out (PNG).

Its own stage, over the reporting code only: a change of the drawing redraws the figures and retrains or
re-evaluates nothing.
"""
from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.reporting.colours import seg_palette
from xtask.reporting.figures import read_examples, write_examples_figure


def main() -> None:
    parser = dataset_parser(__doc__)
    path_arg(parser, "--examples", "the evaluate stage's --examples file")
    path_arg(parser, "--out", "the figure PNG to write")
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    examples, depth_kind, title = read_examples(args.examples)
    write_examples_figure(examples, args.out, palette=seg_palette(cfg.data.format, cfg.data.num_classes),
                          depth_kind=depth_kind, title=title)
    print(f"{cfg.name}: figure {args.out}")


if __name__ == "__main__":
    run(main)
