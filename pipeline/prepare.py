"""Stage `prepare`: validate the raw dataset once and write the training-resolution copy."""
from pathlib import Path

from xtask.data.prepare import prepare
from xtask.errors import XTaskError

from .cli import dataset_config, dataset_parser, run

WHERE = {
    "cityscapes": "leftImg8bit/, gtFine/ and disparity/ (README: 'Reproducing the paper')",
    "nyu": "MTAN's preprocessed train/ and val/ folders (README: 'Reproducing the paper')",
}


def main() -> None:
    args = dataset_parser(__doc__).parse_args()
    _, cfg = dataset_config(args)
    raw = Path(cfg.input_path)
    if not raw.is_dir():
        raise XTaskError(f"{raw}: dataset {cfg.name!r} not found; put {WHERE[cfg.format]} there, "
                         f"or set {cfg.name}.input_path in params.yaml")
    prepare(cfg.format, raw, cfg.prepared_dir(), num_classes=cfg.num_classes, height=cfg.height, width=cfg.width,
            expect_full_size=cfg.expect_full_size, progress=not args.no_progress)


if __name__ == "__main__":
    run(main)
