"""Markdown of `dvc metrics diff` and `dvc params diff` against a base revision (the PR comment).

The one DVC metric is the report's metrics/summary.json (mean, std, n over seeds of every table metric and
delta_m): the comment shows what the models learned, not timings or per-run metadata (docs/dvc.md).

`make metrics-diff [BASE=rev]` runs `make repro` first and prints this; the CI workflow
(.github/workflows/metrics.yml) posts the same text to the pull request.
"""
import argparse
import sys

from xtask.common.cli import run
from xtask.common.io import write_text
from xtask.runtime.command import run_command


def _dvc(*args: str) -> str:
    return run_command([sys.executable, "-m", "dvc", *args], f"dvc {' '.join(args)}").strip()


def diff_markdown(base: str) -> str:
    sections = []
    for what, none in (("metrics", "No metric changed."), ("params", "No parameter changed.")):
        table = _dvc(what, "diff", "--md", base)
        if len(table.splitlines()) <= 2:  # dvc prints the header row alone when nothing changed
            table = none
        sections.append(f"### {what.capitalize()}: `{base}` -> this workspace\n\n{table}\n")
    return "\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="main", help="the git revision to compare with (default main)")
    parser.add_argument("--out", help="write the markdown to this file instead of printing it")
    args = parser.parse_args()
    text = diff_markdown(args.base)
    if args.out:
        write_text(args.out, text)
    else:
        print(text, end="")


if __name__ == "__main__":
    run(main)
