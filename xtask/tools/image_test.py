"""`make image-test`: the project's image built for real on a stand-in base, the synthetic default reproduced
inside it, and its metrics checked against the host's committed ones (docs/containers.md).

Opt-in: CI has no container engine, and no image registry may be reachable (NVIDIA's CUDA base then cannot
be pulled). So, with rootful podman and its storage in a folder of its own (``--dir``, outside the
repository):

1. base: a stand-in for the CUDA base, Debian 12 (bookworm) from ``debootstrap --variant=minbase``,
   imported as ``localhost/xtask-standin:bookworm``; made once, then reused. Like NVIDIA's base it is a
   minimal apt system (without CUDA: the torch wheel brings its own), and Debian's python3.11 is 3.11.2, a
   final release, so the build takes ``PYTHON=distro``. The host's CA bundle goes in as a local
   certificate, so that pip in the build trusts what the host's pip trusts (a proxy's CA included).
2. build: the repository's Dockerfile as it is, ``--build-arg BASE=<stand-in> PYTHON=distro``, with the
   host's pip configuration and local wheel folders mounted read-only into its RUN steps (the pinned CUDA
   torch wheel may lie only there).
3. run: the image's default command, ``xtask-repro --force`` (``dvc repro`` of the image's own copy),
   with ``OMP_NUM_THREADS=2`` (the committed metrics' thread count) and no network. The image's copies
   of the checked metrics files are deleted first, so only what the run writes can pass.
4. compare: those files against the host's HEAD within CI's measured tolerances
   (:func:`xtask.tools.check_metrics.check`, what ``make check-metrics`` runs).
5. docker route: ``launch.where: docker``'s ``docker run`` (:func:`xtask.runtime.launch._docker_argv`), sent
   by the docker CLI to podman's docker-compatible socket (podman's stock limits: the command must bring
   its own), its training replaced by a probe that must report the mount, the user and the open-file
   limit; then what the engine made of ``--gpus all``, reported (podman drops it; there is no GPU here
   to tell). Skipped, in one line, when there is no ``docker`` CLI.

Each step prints its time. A failure is one line naming the step; the engine's own output is above it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from xtask.common.cli import run
from xtask.common.config import LaunchConfig
from xtask.common.errors import XTaskError
from xtask.runtime import gpu_slots, launch
from xtask.tools.check_metrics import ROOTS, check
from xtask.runtime.command import last_line

DEFAULT_DIR = Path("/var/tmp/xtask-image")
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
STANDIN = f"localhost/xtask-standin:{SUITE}"
IMAGE = "localhost/xtask:image-test"
# What Docker's Debian and Ubuntu images (and NVIDIA's, on top) set; an imported tree has no environment, and
# the Dockerfile's `ENV PATH=/opt/venv/bin:$PATH` would then leave apt-get off the PATH.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# What pip reads on a machine whose pins come from local folders (this one's: its config files, and the
# folders of wheels they name), mounted read-only at the same place in the build's RUN steps; the ones
# that do not exist are left out (plain PyPI then). "~" is root's home in the build.
PIP_PATHS = ("/etc/pip.conf", "/etc/xdg/pip", "~/.config/pip", "~/.pip", "/opt/wheels", "/opt/pypi",
             "/opt/pypi-more")
THREADS = 2  # the committed metrics' CPU thread count (Makefile CHECK_THREADS)
# deleted in the image's copy before the run: the files metrics_check compares
CHECKED_GLOB = "metrics/*/*/seed*.json"
PROBE = ("import os, resource, torch; n = resource.getrlimit(resource.RLIMIT_NOFILE); "
         "print(f'probe: uid {os.getuid()}, /workspace/dvc.yaml {os.path.isfile(\"dvc.yaml\")}, '"
         "f'open files {n[0]}:{n[1]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}')")
INSTALL = "apt-get install podman debootstrap runc"


def engine_env(work: Path, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment that points podman at this test's configuration and storage, under ``work``."""
    return {**env, "CONTAINERS_CONF": str(work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(work / "storage.conf")}


def write_engine_config(work: Path, limits: Mapping[str, str]) -> None:
    """podman's configuration for this test, leaving the machine's own (/etc/containers) alone: storage under
    ``work``; containers.conf for the build and run, and containers-docker.conf, podman's stock limits, for
    the docker route (whose `docker run` must bring its own limits, as on any podman host)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{work}/storage"\nrunroot = "{work}/run"\n')
    # runc: what this was run with (crun, podman's other runtime, failed in a feasibility study on this
    # kind of machine, a container itself); cgroupfs and a file for events: such a machine need not run
    # systemd (this one does not)
    engine = '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    (work / "containers-docker.conf").write_text(engine)
    # default_ulimits: podman otherwise asks for 1048576 open files and 4194304 processes in every
    # container ("error setting rlimit type 6: operation not permitted" here), beyond what a root without
    # CAP_SYS_RESOURCE (itself in a container, as here) can set; launch's docker route has the same issue
    # and passes limits podman can set (xtask.runtime.launch.container_ulimits), which serve here too
    ulimits = ", ".join(f'"{name}={value}"' for name, value in limits.items())
    (work / "containers.conf").write_text(f'[containers]\ndefault_ulimits = [{ulimits}]\n\n' + engine)


def pip_mounts(paths: Sequence[str] = PIP_PATHS, home: str = str(Path.home())) -> list[str]:
    """``--volume`` arguments for the build: each existing path of ``paths`` read-only at the same place."""
    out = []
    for p in paths:
        host = p.replace("~", home, 1) if p.startswith("~") else p
        if os.path.exists(host):
            inside = p.replace("~", "/root", 1) if p.startswith("~") else p
            out.append(f"--volume={host}:{inside}:ro")
    return out


def build_argv(repo: Path, base: str = STANDIN, image: str = IMAGE, mounts: Sequence[str] = ()) -> list[str]:
    # --pull=never: the base is local, and no registry is asked; host network for apt and pip (a bridge
    # would need netavark and iptables, which a nested machine may lack)
    return ["podman", "build", "--pull=never", "--network=host", "--file", str(repo / "Dockerfile"),
            "--tag", image, "--build-arg", f"BASE={base}", "--build-arg", "PYTHON=distro", *mounts, str(repo)]


def run_argv(name: str, image: str = IMAGE, threads: int = THREADS) -> list[str]:
    # --force: every stage runs even where DVC would find its outputs up to date; the deleted metrics
    # make a stage that ran nothing fail the comparison rather than pass on the committed files
    script = f"rm -f {CHECKED_GLOB} && exec xtask-repro --force"
    return ["podman", "run", "--name", name, "--network=none", "--env", f"OMP_NUM_THREADS={threads}",
            image, "bash", "-c", script]


def docker_probe_argv(repo: Path, image: str, env: Mapping[str, str]) -> list[str]:
    """launch.where: docker's command for ``image``, its training replaced by :data:`PROBE`."""
    argv = launch.launch_argv(LaunchConfig(where="docker", image=image), [], env, repo, os.getuid(), os.getgid())
    assert argv is not None
    return argv[:argv.index(image) + 1] + ["python", "-c", PROBE]


def probe_line(nofile: str) -> str:
    """What the probe must print (in part) when the mount, the user and the open-file limit arrived."""
    soft, hard = nofile.split(":")
    return f"probe: uid {os.getuid()}, /workspace/dvc.yaml True, open files {soft}:{hard}"


class Steps:
    """Runs commands as named steps: the step's time is printed, a failure is one line naming it."""

    def __init__(self, env: Mapping[str, str], say: Callable[[str], None]):
        self.env, self.say, self.times = dict(env), say, {}

    def run(self, step: str, argv: Sequence[str], env: Optional[Mapping[str, str]] = None,
            **kw) -> subprocess.CompletedProcess:
        self.say(f"image-test: {step}: {' '.join(argv)}")
        r = subprocess.run(list(argv), env=self.env if env is None else env, **kw)
        if r.returncode != 0:
            raise XTaskError(f"image-test: {step} failed: {argv[0]} {argv[1]} exited {r.returncode}"
                             + (f": {last_line(r.stderr, 'no output')}" if isinstance(r.stderr, str)
                                else " (its output is above)"))
        return r

    def timed(self, step: str, fn: Callable[[], object]) -> object:
        start = time.monotonic()
        out = fn()
        self.times[step] = time.monotonic() - start
        self.say(f"image-test: {step}: {self.times[step]:.0f} s")
        return out


def image_exists(steps: Steps, image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image], env=steps.env).returncode == 0


def remove_tree(path: Path) -> None:
    """rm -r of a debootstrap tree. An interrupted debootstrap leaves the host's /proc and /sys mounted in it:
    they are unmounted first, and rm stays on the tree's own file system whatever is left."""
    if not path.exists():
        return
    below = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
             if line.split()[4].startswith(f"{path}/")]
    for mount in sorted(below, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def make_base(steps: Steps, work: Path) -> None:
    """The stand-in base, unless already in the test's storage: debootstrap, the host's CA, import."""
    if image_exists(steps, STANDIN):
        steps.say(f"image-test: base: {STANDIN} already made (podman rmi it to make it again)")
        return
    partial = work / f"rootfs-{SUITE}.partial"  # removed whatever happens: never mistaken for a finished one
    remove_tree(partial)
    try:
        steps.run("base", ["debootstrap", "--variant=minbase", SUITE, str(partial), MIRROR],
                  stdout=subprocess.DEVNULL)
        if HOST_CA.is_file():  # update-ca-certificates adds it when the Dockerfile installs ca-certificates
            local = partial / "usr/local/share/ca-certificates"  # made by that package, not in minbase
            local.mkdir(parents=True, exist_ok=True)
            shutil.copy(HOST_CA, local / "xtask-host-bundle.crt")
        tar = subprocess.Popen(["tar", "-C", str(partial), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            steps.run("base", ["podman", "import", "--change", f"ENV PATH={BASE_PATH}", "--change", 'CMD ["bash"]',
                               "-", STANDIN], stdin=tar.stdout, stdout=subprocess.DEVNULL)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise XTaskError(f"image-test: base failed: tar of {partial} exited {tar.returncode}")
    finally:
        remove_tree(partial)


def run_and_copy_out(steps: Steps, out: Path, threads: int) -> None:
    """The synthetic default reproduced in the image; its metrics folder copied to ``out``/metrics."""
    name = f"xtask-image-test-{os.getpid()}"
    try:
        steps.run("run", run_argv(name, threads=threads))
        out.mkdir(parents=True)
        steps.run("run", ["podman", "cp", f"{name}:/workspace/metrics", str(out / "metrics")],
                  capture_output=True, text=True)
    finally:
        subprocess.run(["podman", "rm", "--force", "--ignore", name], env=steps.env, capture_output=True)


def docker_route(steps: Steps, work: Path, repo: Path) -> None:
    """launch.where: docker's `docker run` through podman's docker-compatible socket."""
    docker = shutil.which("docker", path=steps.env.get("PATH"))
    if docker is None:
        steps.say("image-test: docker route: skipped, no `docker` CLI on PATH")
        return
    sock = work / "podman.sock"
    sock.unlink(missing_ok=True)
    service_env = {**steps.env, "CONTAINERS_CONF": str(work / "containers-docker.conf")}
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], env=service_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise XTaskError(f"image-test: docker route failed: podman system service did not start: "
                                 f"{last_line(service.stderr.read() if service.poll() is not None else '', 'no output')}")
            time.sleep(0.2)
        env = {**steps.env, "DOCKER_HOST": f"unix://{sock}"}
        probe = docker_probe_argv(repo, IMAGE, env)
        gpu_slots.ensure_dir(gpu_slots.lock_dir(env))  # as launch does before docker run: never root's and closed
        out = steps.run("docker route", probe, env=env, capture_output=True, text=True).stdout
        want = probe_line(launch.container_ulimits()["nofile"])
        if want not in out:
            raise XTaskError(f"image-test: docker route failed: the probe printed {last_line(out, 'no output')!r}, not {want!r}")
        steps.say(f"image-test: docker route: {last_line(out, 'no output')}")
        # What the engine made of --gpus all: Docker keeps it as a device request for the NVIDIA runtime;
        # podman 4.3's socket drops it without a word, so no GPU would reach the container. Reported,
        # not failed: there is no GPU here either way.
        created = steps.run("docker route", ["docker", "create", *probe[2:]], env=env, capture_output=True,
                            text=True).stdout.strip()
        try:
            requests = steps.run("docker route", ["docker", "inspect", "--format",
                                                  "{{json .HostConfig.DeviceRequests}}", created], env=env,
                                 capture_output=True, text=True).stdout.strip()
        finally:
            subprocess.run(["docker", "rm", created], env=env, capture_output=True)
        kept = requests not in ("null", "[]", "")
        steps.say(f"image-test: docker route: --gpus all {'kept' if kept else 'dropped'} by the engine "
                  f"(HostConfig.DeviceRequests {requests}){'' if kept else ': no GPU would reach the container'}")
    finally:
        service.terminate()
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()
        sock.unlink(missing_ok=True)


def image_test(repo: Path, work: Path, say: Callable[[str], None] = print, threads: int = THREADS,
               docker: bool = True) -> dict[str, float]:
    """Every step above; returns each step's seconds."""
    missing = [t for t in ("podman", "debootstrap", "runc") if shutil.which(t) is None]
    if missing:
        raise XTaskError(f"image-test: {', '.join(missing)} not found; install them (Debian/Ubuntu: {INSTALL})")
    if os.geteuid() != 0:
        raise XTaskError("image-test: run as root (rootful podman; debootstrap needs root)")
    if work.resolve().is_relative_to(repo.resolve()):
        raise XTaskError(f"image-test: {work} is inside the repository, whose build context it would join")
    write_engine_config(work, launch.container_ulimits())
    steps = Steps(engine_env(work), say)
    steps.timed("base", lambda: make_base(steps, work))
    steps.timed("build", lambda: steps.run("build", build_argv(repo, mounts=pip_mounts())))
    # the image a rebuild replaced, untagged (in this test's own storage only)
    subprocess.run(["podman", "image", "prune", "--force"], env=steps.env, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="out-", dir=work) as tmp:
        steps.timed("run", lambda: run_and_copy_out(steps, Path(tmp) / "copy", threads))
        steps.timed("compare", lambda: check(repo, repo / "benchmarks/tolerance.json", ROOTS, "HEAD",
                                             reproduced_in=Path(tmp) / "copy", say=say))
    if docker:
        steps.timed("docker route", lambda: docker_route(steps, work, repo))
    return steps.times


USAGE = """`make image-test`: build the image with podman on a locally made stand-in base (Debian 12), reproduce the
synthetic default inside it, and check its metrics against the committed ones within CI's tolerances; then
launch.where: docker's `docker run` through podman's docker-compatible socket (xtask/tools/image_test.py,
docs/containers.md). Opt-in: needs root, podman, debootstrap and runc, and tens of GB under --dir."""


def main() -> None:
    parser = argparse.ArgumentParser(description=USAGE)
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
