"""Stage `report`: the results table (--md, --csv) from every metrics JSON under --metrics."""
import argparse
from pathlib import Path

from xtask.common.io import write_text
from xtask.reporting.report import collect, results_table, to_markdown

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="the folder of metrics/<dataset>/<method>/seed<k>.json")
    parser.add_argument("--md", type=Path, required=True, help="the Markdown table to write")
    parser.add_argument("--csv", type=Path, required=True, help="the CSV table to write")
    args = parser.parse_args()
    table = results_table(collect(args.metrics))
    # both rendered before either is written: a bad input leaves the previous pair untouched
    csv, markdown = table.to_csv(index=False), to_markdown(table)
    write_text(args.csv, csv)
    write_text(args.md, markdown)


if __name__ == "__main__":
    run(main)
