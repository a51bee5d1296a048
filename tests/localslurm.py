"""A single-node SLURM on localhost for tests: Debian's munge, slurmctld and slurmd, with a generated
config in a temporary folder, started in the foreground by this process and stopped by it.

The node claims ``gpus`` GPUs whose "devices" are character nodes made with mknod in the folder: SLURM's
gres plugin only needs files to hand out, so every job step gets its own ``CUDA_VISIBLE_DEVICES`` (0, 1, ...)
although there is no GPU; torch then sees none and ``device: auto`` trains on the CPU. Proctrack linuxproc,
task/none and accounting off: nothing here needs cgroups, a database or systemd.

Needs root (daemons that switch to the job's user, mknod) and the packages; ``install`` fetches them with
apt-get when missing. Every failure is one line that says which daemon failed, with its log's tail.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")
APT_LOCK_WAIT_S = 600  # another apt run on the box (an image build) holds dpkg's lock for minutes
READY_S = 60


class ClusterError(RuntimeError):
    pass


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def install() -> Optional[str]:
    """Install the Debian packages if a program is missing; None when done, else why it could not be."""
    if not missing_programs():
        return None
    if os.geteuid() != 0:
        return f"not root: cannot install {' '.join(PACKAGES)} ({', '.join(missing_programs())} missing)"
    if shutil.which("apt-get") is None:
        return f"no apt-get: cannot install {' '.join(PACKAGES)}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}"]
    for cmd in (["apt-get", *lock, "update", "-q"], ["apt-get", *lock, "install", "-y", "-q", *PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["failed"]
            return f"{' '.join(cmd[:1] + cmd[3:5])}: {tail[0]}"
    still = missing_programs()
    return f"installed {' '.join(PACKAGES)} but {', '.join(still)} still missing" if still else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, host: str, cpus: int, gpus: int, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=xtasktest
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
# a cancelled or requeued job's processes get SIGTERM, then SIGKILL this many seconds later
KillWait=30
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """``with LocalSlurm(folder) as cluster:`` a running cluster; ``cluster.env`` for its client commands."""

    def __init__(self, root: Path, cpus: int = 3, gpus: int = 3):
        self.root, self.cpus, self.gpus = Path(root), cpus, gpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write(self) -> None:
        for sub in ("munge", "state", "spool", "dev"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for k in range(self.gpus):  # NVIDIA's character major 195; nothing ever opens them
            node = self.root / "dev" / f"nvidia{k}"
            if not node.exists():
                os.mknod(node, 0o600 | 0o020000, os.makedev(195, k))
        self.conf.write_text(slurm_conf(self.root, self.host, self.cpus, self.gpus, _free_port(), _free_port()))
        (self.root / "gres.conf").write_text(
            f"NodeName={self.host} Name=gpu File={self.root}/dev/nvidia[0-{self.gpus - 1}]\n")
        (self.root / "plugstack.conf").write_text("")

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=self.env)
        log.close()

    def _tail(self, name: str) -> str:
        lines = []
        for f in (self.root / f"{name}.out", self.root / f"{name}.log"):
            if f.exists():
                lines += f.read_text(errors="replace").strip().splitlines()[-5:]
        return " | ".join(lines) or "no output"

    def start(self) -> "LocalSlurm":
        self._write()
        m = self.root / "munge"
        self._start("munged", ["munged", "-F", "--force", f"--socket={m}/munge.socket", f"--key-file={m}/munge.key",
                               f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log",
                               f"--seed-file={m}/munged.seed"])
        self._wait(lambda: (m / "munge.socket").exists(), "munged")
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld")
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        self._wait(lambda: self._ok(["sinfo", "-h", "-o", "%T"], "idle"), "slurmd")
        return self

    def _ok(self, argv: list[str], word: str) -> bool:
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and word in r.stdout

    def _wait(self, ready, name: str) -> None:
        deadline = time.monotonic() + READY_S
        while not ready():
            for n, p in self.procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{n} exited with {p.returncode}: {self._tail(n)}")
            if time.monotonic() > deadline:
                raise ClusterError(f"{name} not ready after {READY_S} s: {self._tail(name)}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job and wait for the queue to empty, stop the daemons (the last started first), then
        kill what is left of this cluster's jobs: slurmstepd outlives slurmd, and a job's processes would
        go on training. They are found by their environment, which names this cluster's config."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True, timeout=30)
            deadline = time.monotonic() + 60  # KillWait (30 s) and the epilog
            while time.monotonic() < deadline and job_processes(self.env) not in ([], [""]):
                time.sleep(1)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
        for pid in self.leftovers():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def leftovers(self) -> list[int]:
        """Processes (other than this one) whose environment says SLURM_CONF=<this cluster's config>."""
        mark, out = f"SLURM_CONF={self.conf}".encode(), []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                if mark in (proc / "environ").read_bytes().split(b"\0"):
                    out.append(int(proc.name))
            except OSError:
                continue
        return out

    def __enter__(self) -> "LocalSlurm":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def job_processes(env: Mapping[str, str]) -> list[str]:
    """squeue's lines for every job still known ([] when none)."""
    r = subprocess.run(["squeue", "-h", "-o", "%i %T %R"], env=env, capture_output=True, text=True, timeout=30)
    return r.stdout.split("\n")[:-1] if r.returncode == 0 else [r.stderr.strip()]
