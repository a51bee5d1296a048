"""Exit 0 when the running Python is a final 3.11 release; else one line on stderr and exit 1.

The Dockerfile runs it with the image's python3.11 right after installing it, so a base whose archive
holds only a release candidate (Ubuntu 22.04's 3.11.0rc1) fails the build at that step rather than
leaving an image whose interpreter the pins and the committed metrics were never made with.
"""
from __future__ import annotations

import sys

WANTED = (3, 11)


def problem(version_info=sys.version_info, version: str = sys.version) -> str | None:
    """Why this interpreter is not a final 3.11 release, or None when it is."""
    if tuple(version_info[:2]) != WANTED or version_info.releaselevel != "final":
        found = version.split()[0]
        return (f"check_python: python3.11 is {found}, not a final {WANTED[0]}.{WANTED[1]} release; "
                "build with the default PYTHON=deadsnakes or a base whose python3.11 is a final release "
                "(docs/containers.md)")
    return None


if __name__ == "__main__":
    line = problem()
    if line:
        sys.exit(line)
    print(f"check_python: {sys.version.split()[0]}, a final release")
