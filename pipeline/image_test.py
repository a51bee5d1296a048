"""`make image-test`: build the image with podman on a locally made stand-in base (Debian 12), reproduce the
synthetic default inside it, and check its metrics against the committed ones within CI's tolerances; then
launch.where: docker's `docker run` through podman's docker-compatible socket (xtask/tools/image_test.py,
docs/containers.md). Opt-in: needs root, podman, debootstrap and runc, and tens of GB under --dir."""
import argparse
from pathlib import Path

from xtask.tools.image_test import DEFAULT_DIR, THREADS, image_test

from .cli import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"podman's configuration and storage, outside the repository (default {DEFAULT_DIR})")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help=f"OMP_NUM_THREADS in the container (default {THREADS}, the committed metrics')")
    parser.add_argument("--no-docker-route", action="store_true",
                        help="skip the docker CLI -> podman socket check")
    args = parser.parse_args()
    times = image_test(Path.cwd(), args.dir, say=lambda line: print(line, flush=True),
                       threads=args.threads, docker=not args.no_docker_route)
    print("image-test: passed; " + ", ".join(f"{step} {s:.0f} s" for step, s in times.items()))


if __name__ == "__main__":
    run(main)
