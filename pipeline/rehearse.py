"""`make rehearse`: the paper's table shape on stand-in data through the routes users take (stand-in raw data
in both formats, the real sections with -S overrides, every run queued, the report, a remote and a clone
that reproduces nothing); xtask/tools/rehearse.py. Prints the results table and `dvc queue status`."""
import argparse
import tempfile
from pathlib import Path

from xtask.common.errors import XTaskError
from xtask.tools.rehearse import check_report, rehearse

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, default=None,
                        help="an empty or new folder to rehearse in and keep (default: a temporary one, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="xtask-rehearse-") as tmp:
        work = args.keep or Path(tmp)
        if work.exists() and any(work.iterdir()):
            raise XTaskError(f"{work}: not empty; --keep wants an empty or new folder")
        out = rehearse(Path.cwd(), work, say=lambda line: print(line, flush=True))
    print(out["results"])
    print(out["queue_status"])
    missing = check_report(out["results"])
    if missing:
        raise XTaskError(f"rehearse: the report lacks what the table needs: {missing}")
    print("rehearse: every route worked")


if __name__ == "__main__":
    run(main)
