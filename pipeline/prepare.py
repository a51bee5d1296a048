"""Stage `prepare`: validate the raw dataset (params `data.input_path`) once and write the training-resolution
copy to --out."""
from pathlib import Path

from xtask.common.cli import dataset_config, dataset_parser, path_arg, run
from xtask.common.errors import XTaskError
from xtask.data.prepare import prepare

# What a raw dataset folder must hold, per on-disk format, and how to say so.
EXPECTED = {
    "cityscapes": (("leftImg8bit", "gtFine", "disparity"), "leftImg8bit/, gtFine/ and disparity/"),
    "nyu": (("train", "val"), "MTAN's preprocessed train/ and val/ folders"),
}


def main() -> None:
    parser = dataset_parser(__doc__)
    path_arg(parser, "--out", "the prepared dataset folder to write")
    args = parser.parse_args()
    _, cfg = dataset_config(args)
    data = cfg.data
    raw = Path(data.input_path)
    folders, description = EXPECTED[data.format]
    if not raw.is_dir() or not any((raw / f).is_dir() for f in folders):
        raise XTaskError(f"{raw}: no {cfg.name} data found; put {description} there "
                         f"(README: 'Getting the data'), or set {cfg.name}.data.input_path in params.yaml")
    prepare(data.format, raw, args.out, num_classes=data.num_classes, height=data.height, width=data.width,
            expect_full_size=data.expect_full_size, progress=not args.no_progress)


if __name__ == "__main__":
    run(main)
