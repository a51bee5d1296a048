"""Stage `generate`: write the synthetic dataset (Cityscapes on-disk format) to its input_path."""
from pathlib import Path

from xtask.data.synthetic import generate
from xtask.errors import XTaskError

from .cli import dataset_config, dataset_parser, run


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    _, cfg = dataset_config(args)
    if cfg.generate is None:
        raise XTaskError(f"params.yaml: {cfg.name}.generate: missing; only a synthetic dataset can be generated")
    g = cfg.generate
    generate(Path(cfg.input_path), seed=g.seed, n_train=g.n_train, n_val=g.n_val, height=g.height, width=g.width)


if __name__ == "__main__":
    run(main)
