"""Stage `report`: metrics/results.md and metrics/results.csv from every metrics JSON."""
import argparse
from pathlib import Path

from xtask.io import write_text
from xtask.report import collect, results_table, to_markdown

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", default="metrics", help="metrics folder (default metrics)")
    args = parser.parse_args()
    root = Path(args.metrics)
    table = results_table(collect(root))
    # both rendered before either is written: a bad input leaves the previous pair untouched
    csv, markdown = table.to_csv(index=False), to_markdown(table)
    write_text(root / "results.csv", csv)
    write_text(root / "results.md", markdown)


if __name__ == "__main__":
    run(main)
