"""Where the train stage runs: in this process, under torchrun, or in the project's image.

DVC on the host runs ``python -m pipeline.train ...``; params.yaml ``launch`` may say that the work belongs
in the container (``where: docker``) or in several DDP processes (``nproc_per_node > 1``). ``where: slurm``
trains inside a SLURM job (the sweep's array tasks, xtask/tools/sweep.py) and refuses outside one.
For docker or torchrun this process replaces itself (exec) with the command that does it, so DVC keeps the
pipeline while the GPU work runs elsewhere, and DVC's SIGTERM reaches docker or torchrun directly.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

from xtask.common.config import LaunchConfig
from xtask.common.errors import XTaskError
from xtask.runtime import gpu_slots

# Set in the image (Dockerfile): the re-run inside reads the same params and must not start docker again.
IN_CONTAINER = "XTASK_IN_CONTAINER"
SLURM_JOB = "SLURM_JOB_ID"  # set by SLURM in every job: where: slurm trains inside one, in this process
WORKDIR = "/workspace"
# Host folders outside the repository that the run may need, mounted at the same absolute path so that
# a symlink (data/cityscapes -> /big/cityscapes) or a configured `dvc cache dir` resolves alike inside.
SAME_PATH_MOUNTS = ("XTASK_DATA", "XTASK_DVC_CACHE")
# Passed through so that a queue pinned to one GPU or a thread cap on the host holds inside as well.
PASSED_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NCCL_DEBUG",
              gpu_slots.JOBS_PER_GPU, gpu_slots.WAIT_S)


def container_ulimits() -> dict[str, str]:
    """The container's limits, ``{"nofile": "soft:hard", "nproc": "soft:hard"}``: on open files (DataLoader
    workers pass batches as file descriptors) and processes, said because podman's docker-compatible socket
    otherwise asks for 1048576 files and 4194304 processes, which fails ("error setting rlimit ...:
    operation not permitted") wherever that is above what podman may set: rootless podman, or root without
    CAP_SYS_RESOURCE (inside another container). Open files: the caller's limits, as the stage would have
    them on the host. Processes: the caller's too, but at most 32768, which podman (4.3, rootful) sets for
    itself and so for runc and the container; far more than a training run starts. Docker's daemon sets
    any of them."""
    import resource  # only the container route reads the limits
    out = {}
    for name, which, cap in (("nofile", resource.RLIMIT_NOFILE, None), ("nproc", resource.RLIMIT_NPROC, 32768)):
        soft, hard = (-1 if v == resource.RLIM_INFINITY else v for v in resource.getrlimit(which))
        if cap is not None:
            soft, hard = (cap if v == -1 else min(v, cap) for v in (soft, hard))
        out[name] = f"{soft}:{hard}"
    return out


def _docker_argv(cfg: LaunchConfig, args: Sequence[str], env: Mapping[str, str], repo: Path,
                 uid: int, gid: int) -> list[str]:
    argv = ["docker", "run", "--rm", "--init", "--gpus", "all", "--ipc=host", "--user", f"{uid}:{gid}",
            "-v", f"{repo}:{WORKDIR}", "-w", WORKDIR, "-e", "HOME=/tmp"]
    for name, value in container_ulimits().items():
        argv += ["--ulimit", f"{name}={value}"]
    for var in SAME_PATH_MOUNTS:
        if env.get(var):
            argv += ["-v", f"{env[var]}:{env[var]}"]
    # the GPU slot locks: every container and host job on the box must meet in the same folder
    locks = gpu_slots.lock_dir(env)
    argv += ["-v", f"{locks}:{locks}", "-e", f"{gpu_slots.LOCK_DIR}={locks}"]
    if env.get("TORCH_HOME"):  # ImageNet weights for use_pretrain; read-only, nothing is downloaded
        argv += ["-v", f"{env['TORCH_HOME']}:/cache/torch:ro", "-e", "TORCH_HOME=/cache/torch"]
    for var in PASSED_ENV:
        if var in env:
            argv += ["-e", f"{var}={env[var]}"]
    return argv + [cfg.image, "python", "-m", "pipeline.train", *args]


def launch_argv(cfg: LaunchConfig, args: Sequence[str], env: Mapping[str, str], repo: str | Path,
                uid: int, gid: int) -> Optional[list[str]]:
    """The command to run instead of training in this process, or None to train here.

    ``args`` are this ``pipeline.train`` invocation's arguments (``sys.argv[1:]``): the command re-runs
    the same stage, which reads params.yaml again and applies the next rule where it lands.
    """
    if cfg.where == "docker" and IN_CONTAINER not in env:
        return _docker_argv(cfg, args, env, Path(repo), uid, gid)
    if cfg.where == "slurm" and SLURM_JOB not in env:
        # never the login node's CPU or GPU in silence: the table's runs are the sweep's array tasks
        raise XTaskError("launch.where: slurm, but this is no SLURM job (SLURM_JOB_ID unset): the train stage "
                         "runs in the array tasks of `python -m xtask.tools.sweep submit` (docs/slurm.md); to train "
                         "here, -S launch.where=host")
    if cfg.nproc_per_node > 1 and "LOCAL_RANK" not in env:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node", str(cfg.nproc_per_node), "-m", "pipeline.train", *args]
    return None


def exec_if_needed(cfg: LaunchConfig, args: Sequence[str]) -> None:
    """Replace this process with :func:`launch_argv`'s command when there is one; else return."""
    argv = launch_argv(cfg, args, os.environ, os.getcwd(), os.getuid(), os.getgid())
    if argv is None:
        return
    if argv[0] == "docker" and shutil.which("docker") is None:
        raise XTaskError("launch.where: docker, but no `docker` command is on PATH; install Docker with the "
                         "NVIDIA Container Toolkit, or set launch.where: host in params.yaml")
    if argv[0] == "docker":
        gpu_slots.ensure_dir(gpu_slots.lock_dir(os.environ))  # or docker would create it, root's and closed
    print(f"launch: {shlex.join(argv)}", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)
