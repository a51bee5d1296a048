"""Stage `report`: metrics/results.md and metrics/results.csv from every metrics JSON."""
import argparse
from pathlib import Path

from xtask.io import write_text
from xtask.report import collect, to_markdown

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", default="metrics", help="metrics folder (default metrics)")
    args = parser.parse_args()
    root = Path(args.metrics)
    table = collect(root)
    write_text(root / "results.csv", table.to_csv(index=False))
    write_text(root / "results.md", to_markdown(table))


if __name__ == "__main__":
    run(main)
