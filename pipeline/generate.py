"""Stage `generate`: write the synthetic dataset (Cityscapes on-disk format) to --out, the folder its
`input_path` names for the prepare stage."""
from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.common.errors import XTaskError
from xtask.data.synthetic import generate


def main() -> None:
    parser = dataset_parser(__doc__)
    path_arg(parser, "--out", "the raw dataset folder to write")
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    if cfg.generate is None:
        raise XTaskError(f"params.yaml: {cfg.name}.generate: missing; only a synthetic dataset can be generated")
    g = cfg.generate
    generate(args.out, seed=g.seed, n_train=g.n_train, n_val=g.n_val, height=g.height, width=g.width)


if __name__ == "__main__":
    run(main)
