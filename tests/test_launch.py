"""params.yaml `launch` -> the command that replaces `python -m pipeline.train` (docker, torchrun) or none.

The docker command is checked for its shape only: no Docker engine is needed (nor run) here.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xtask.runtime import gpu_slots, launch
from xtask.common.config import LaunchConfig
from xtask.common.errors import XTaskError

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["synthetic", "--seed", "3"]


def _docker(**env):
    return launch.launch_argv(LaunchConfig(where="docker", image="xtask:test"), ARGS, env, "/home/me/xtask",
                              1234, 5678)


def _pairs(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_host_with_one_process_trains_here():
    assert launch.launch_argv(LaunchConfig(), ARGS, {}, "/r", 1, 1) is None
    assert launch.launch_argv(LaunchConfig(where="host", nproc_per_node=1), ARGS, {"LOCAL_RANK": "0"},
                              "/r", 1, 1) is None


def test_docker_runs_the_same_stage_in_the_image_on_all_gpus_as_the_caller():
    argv = _docker()
    image_at = argv.index("xtask:test")
    opts, cmd = argv[:image_at], argv[image_at + 1:]
    assert opts[:3] == ["docker", "run", "--rm"]
    assert cmd == ["python", "-m", "pipeline.train", *ARGS]
    assert _pairs(opts, "--gpus") == ["all"] and "--ipc=host" in opts and "--init" in opts
    assert _pairs(opts, "--user") == ["1234:5678"]
    locks = gpu_slots.lock_dir({})
    assert _pairs(opts, "-v") == ["/home/me/xtask:/workspace", f"{locks}:{locks}"]
    assert _pairs(opts, "-w") == ["/workspace"]
    assert "HOME=/tmp" in _pairs(opts, "-e")  # the caller's uid has no home in the image


def test_docker_mounts_outside_folders_at_the_same_path_and_passes_gpu_and_thread_settings():
    argv = _docker(XTASK_DATA="/big/data", XTASK_DVC_CACHE="/big/dvc-cache", TORCH_HOME="/home/me/.cache/torch",
                   CUDA_VISIBLE_DEVICES="1", OMP_NUM_THREADS="4", UNRELATED="x", XTASK_GPU_LOCK_DIR="/run/gpu-locks",
                   XTASK_JOBS_PER_GPU="2")
    opts = argv[:argv.index("xtask:test")]
    assert _pairs(opts, "-v") == ["/home/me/xtask:/workspace", "/big/data:/big/data",
                                  "/big/dvc-cache:/big/dvc-cache", "/run/gpu-locks:/run/gpu-locks",
                                  "/home/me/.cache/torch:/cache/torch:ro"]
    env = _pairs(opts, "-e")
    assert {"TORCH_HOME=/cache/torch", "CUDA_VISIBLE_DEVICES=1", "OMP_NUM_THREADS=4",
            "XTASK_GPU_LOCK_DIR=/run/gpu-locks", "XTASK_JOBS_PER_GPU=2"} <= set(env)  # jobs in containers meet
    assert not any(e.startswith("UNRELATED") for e in env)


def test_inside_the_image_docker_is_not_started_again():
    cfg = LaunchConfig(where="docker", image="xtask:test")
    assert launch.launch_argv(cfg, ARGS, {launch.IN_CONTAINER: "1"}, "/workspace", 1, 1) is None


def test_several_processes_go_through_torchrun_once():
    cfg = LaunchConfig(nproc_per_node=4)
    argv = launch.launch_argv(cfg, ARGS, {}, "/r", 1, 1)
    assert argv == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
                    "-m", "pipeline.train", *ARGS]
    # torchrun's workers carry LOCAL_RANK: they train
    assert launch.launch_argv(cfg, ARGS, {"LOCAL_RANK": "2"}, "/r", 1, 1) is None


def test_docker_and_several_processes_start_docker_first_then_torchrun_inside():
    cfg = LaunchConfig(where="docker", image="xtask:test", nproc_per_node=2)
    assert launch.launch_argv(cfg, ARGS, {}, "/r", 1, 1)[0] == "docker"
    inside = launch.launch_argv(cfg, ARGS, {launch.IN_CONTAINER: "1"}, "/workspace", 1, 1)
    assert inside[1:4] == ["-m", "torch.distributed.run", "--standalone"]


def test_the_image_sets_the_variable_the_launcher_reads():
    assert f"{launch.IN_CONTAINER}=1" in (ROOT / "Dockerfile").read_text()


def test_missing_docker_is_one_line_naming_the_key(monkeypatch):
    monkeypatch.delenv(launch.IN_CONTAINER, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    execs = []
    monkeypatch.setattr(launch.os, "execvp", lambda *a: execs.append(a))
    with pytest.raises(XTaskError, match=r"launch\.where: docker, but no `docker` command is on PATH") as err:
        launch.exec_if_needed(LaunchConfig(where="docker"), ARGS)
    assert "\n" not in str(err.value) and not execs


def test_slurm_trains_here_inside_a_job_and_refuses_outside_one():
    cfg = LaunchConfig(where="slurm")
    assert launch.launch_argv(cfg, ARGS, {"SLURM_JOB_ID": "17"}, "/r", 1, 1) is None
    argv = launch.launch_argv(LaunchConfig(where="slurm", nproc_per_node=2), ARGS, {"SLURM_JOB_ID": "17"}, "/r", 1, 1)
    assert argv[1:4] == ["-m", "torch.distributed.run", "--standalone"]  # DDP inside the job, as on a host
    with pytest.raises(XTaskError, match=r"launch.where: slurm, but this is no SLURM job .*xtask.tools.sweep submit"):
        launch.launch_argv(cfg, ARGS, {}, "/r", 1, 1)


def test_exec_replaces_the_process_with_the_command(monkeypatch, capsys):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    execs = []
    monkeypatch.setattr(launch.os, "execvp", lambda file, argv: execs.append((file, argv)))
    launch.exec_if_needed(LaunchConfig(nproc_per_node=2), ARGS)
    assert execs and execs[0][0] == sys.executable and execs[0][1][-3:] == ARGS
    assert "launch: " in capsys.readouterr().err
    execs.clear()
    launch.exec_if_needed(LaunchConfig(), ARGS)
    assert not execs


def test_the_train_stage_with_where_docker_and_no_docker_stops_with_one_line(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["launch"]["where"] = "docker"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"PATH": "/nonexistent", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "pipeline.train", "synthetic", "--params",
                        str(tmp_path / "params.yaml"), "--data", "d", "--out", "m", "--live", "l"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error: launch.where: docker, but no `docker`")


def test_docker_gives_the_container_the_callers_file_and_process_limits(monkeypatch):
    # podman's docker socket would ask for 1048576 files and 4194304 processes, beyond what it may set
    # where it lacks CAP_SYS_RESOURCE; docker run must say the limits itself
    import resource
    limits = {resource.RLIMIT_NOFILE: (1024, 4096), resource.RLIMIT_NPROC: (1000, 2000)}
    monkeypatch.setattr(resource, "getrlimit", limits.__getitem__)
    argv = _docker()
    assert _pairs(argv[:argv.index("xtask:test")], "--ulimit") == ["nofile=1024:4096", "nproc=1000:2000"]


@pytest.mark.parametrize("nproc, expected", [((-1, -1), "nproc=32768:32768"),
                                             ((4096, 96367), "nproc=4096:32768")])
def test_docker_caps_the_process_limit_at_what_podman_sets_itself(monkeypatch, nproc, expected):
    import resource
    inf = resource.RLIM_INFINITY
    limits = {resource.RLIMIT_NOFILE: (inf, inf), resource.RLIMIT_NPROC: tuple(inf if v == -1 else v for v in nproc)}
    monkeypatch.setattr(resource, "getrlimit", limits.__getitem__)
    argv = _docker()
    assert _pairs(argv[:argv.index("xtask:test")], "--ulimit") == ["nofile=-1:-1", expected]  # -1: unlimited
