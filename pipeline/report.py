"""Stage `report`: the results table (--md, --csv) and the seed-independent summary (--summary, DVC's
metric) from the metrics JSON under --metrics of the seeds in params.yaml `seeds`; every file left out is
named on stderr (and in the table)."""
import argparse
import sys
from pathlib import Path

from xtask.common.cli import run
from xtask.common.config import load_params
from xtask.common.io import write_text
from xtask.reporting.report import collect, results_table, summary, summary_json, to_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="the folder of metrics/<dataset>/<method>/seed<k>.json")
    parser.add_argument("--md", type=Path, required=True, help="the Markdown table to write")
    parser.add_argument("--csv", type=Path, required=True, help="the CSV table to write")
    parser.add_argument("--summary", type=Path, required=True,
                        help="the summary JSON to write: mean, std and n over seeds per dataset, method, protocol")
    parser.add_argument("--params", default="params.yaml",
                        help="parameters file whose `seeds` count (default params.yaml)")
    args = parser.parse_args()
    runs = collect(args.metrics, seeds=load_params(args.params).seeds)
    table = results_table(runs)
    # all rendered before any is written: a bad input leaves the previous files untouched
    csv, markdown, summary_text = table.to_csv(index=False), to_markdown(table), summary_json(summary(table))
    write_text(args.csv, csv)
    write_text(args.md, markdown)
    write_text(args.summary, summary_text)
    for path, reason in table.attrs["ignored"]:
        print(f"{path}: ignored: {reason}", file=sys.stderr)


if __name__ == "__main__":
    run(main)
