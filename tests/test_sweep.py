"""The SLURM sweep's parts that need no cluster (xtask/runtime/slurm.py, xtask/tools/sweep.py): the sbatch line,
squeue's view, each task's state, the steps of an attempt, the refusals of submit, and the signals a task
passes on. The whole route on a real (local) SLURM is tests/test_slurm.py (slow)."""
import dataclasses
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from xtask.common.config import SlurmConfig, load_params
from xtask.common.errors import XTaskError
from xtask.runtime import slurm
from xtask.tools import sweep as tool

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


def test_array_spec_compresses_runs_of_indices():
    assert slurm.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm.array_spec([4]) == "4"
    assert slurm.array_spec([3, 1, 2, 1]) == "1-3"
    with pytest.raises(ValueError):
        slurm.array_spec([])


def test_sbatch_line_one_gpu_per_task_signal_before_the_limit_requeue_then_the_users_options():
    cfg = SlurmConfig(gres="gpu:a100:1", sbatch=("--partition=gpu", "--time=1-00:00:00"), stop_before_limit_s=900)
    argv = slurm.sbatch_argv(cfg, name="xtask-s1", indices=[0, 1, 2, 4], output=Path("/s/slurm/%A_%a.out"),
                             script=Path("/s/task.sh"))
    assert argv[:2] == ["sbatch", "--parsable"] and argv[-1] == "/s/task.sh"
    assert {"--job-name=xtask-s1", "--array=0-2,4", "--gres=gpu:a100:1", "--signal=B:USR1@900", "--requeue",
            "--output=/s/slurm/%A_%a.out"} <= set(argv)
    assert argv[-3:-1] == ["--partition=gpu", "--time=1-00:00:00"]  # the user's, after the sweep's own


def test_job_id_and_squeue_parsing():
    assert slurm.parse_job_id("1234\n") == "1234" and slurm.parse_job_id("77;cluster\n") == "77"
    with pytest.raises(XTaskError, match="no job id"):
        slurm.parse_job_id("sbatch: error: something\n")
    text = ("101|100|0|RUNNING|node7\n102|100|1|PENDING|(Resources)\n103|100|2|COMPLETED|node7\n"
            "201|200|0|RUNNING|node1\n300|300|N/A|RUNNING|node2\n")
    assert slurm.parse_squeue(text, ["100", "300"]) == {
        ("100", 0): slurm.Queued("101", "RUNNING", "node7"), ("100", 1): slurm.Queued("102", "PENDING", "(Resources)")}


def test_a_tasks_state_the_queue_first_then_its_status_file():
    assert tool.classify(slurm.Queued("5", "PENDING", "(Priority)"), {"state": "stopped"}) == (
        "pending", "(Priority)")
    assert tool.classify(None, {"state": "running"})[0] == "lost"  # gone from the queue without a word
    assert tool.classify(None, {"state": "done", "detail": "pushed"}) == ("done", "pushed")
    assert tool.classify(None, {"state": "not started", "attempts": []})[0] == "not started"
    assert set(tool.RESUBMIT) == {"failed", "stopped", "lost", "not started"}


def test_the_table_is_every_dataset_method_and_seed_numbered_from_zero():
    params = dataclasses.replace(load_params(ROOT / "params.yaml"), run=("cityscapes", "nyu"),
                                 methods=("xtask", "mtl"), seeds=(0, 1, 2))
    tasks = tool.table(params)
    assert len(tasks) == 12 and [t.index for t in tasks] == list(range(12))
    assert tasks[0].name == "cityscapes-xtask-0" and tasks[-1].name == "nyu-mtl-2"
    assert tasks[4].set_params() == ["run=[cityscapes]", "methods=[mtl]", "seeds=[1]"]


def _sweep(tmp_path):
    return tool.Sweep(folder=tmp_path, id="s", commit="c0ffee", git_remote="origin", git_url="/git/xtask.git",
                      set_params=("synthetic.optim.epochs=1",), tasks=(tool.Task(0, "synthetic", "xtask", 3),), arrays=())


def test_an_attempt_clones_once_and_runs_the_experiment_once(tmp_path):
    sweep, task = _sweep(tmp_path), tool.Task(0, "synthetic", "xtask", 3)
    repo = tmp_path / "tasks" / task.name / "repo"
    first = [argv for argv, _ in tool.task_steps(sweep, task, repo, fresh=True, have_exp=False)]
    assert first[0][:2] == ["git", "clone"] and first[0][-2:] == ["/git/xtask.git", str(repo)]
    assert first[1] == ["git", "checkout", "-q", "--force", "--detach", "c0ffee"]
    assert first[2][0] == tool.PYTHON and Path(tool.PYTHON).is_absolute()
    assert first[2][1:] == ["-m", "dvc", "exp", "run", "-n", "synthetic-xtask-3", "-S", "run=[synthetic]",
                            "-S", "methods=[xtask]", "-S", "seeds=[3]", "-S", "synthetic.optim.epochs=1", "--pull",
                            "--allow-missing"]
    assert first[3][1:] == ["-m", "dvc", "exp", "push", "/git/xtask.git", "synthetic-xtask-3"]
    # again in the kept checkout (scratch/ holds the state): no clone; an experiment made but not pushed: push only
    again = [argv[:2] for argv, _ in tool.task_steps(sweep, task, repo, fresh=False, have_exp=False)]
    assert again[0] == ["git", "checkout"] and len(again) == 3
    pushed = [argv[3:5] for argv, _ in tool.task_steps(sweep, task, repo, fresh=False, have_exp=True)]
    assert pushed[1:] == [["exp", "push"]]


def test_a_task_requeues_itself_alone_not_its_array():
    # found on SLURM 22.05: the array's last task has SLURM_JOB_ID == SLURM_ARRAY_JOB_ID
    env = {"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "2"}
    assert tool.requeue_target(env) == "41_2"
    assert tool.requeue_target({"SLURM_JOB_ID": "9"}) == "9"


def test_the_batch_script_execs_the_task_runner_so_the_signal_reaches_it(tmp_path):
    script = tool.BATCH_SCRIPT.format(repo="/r", python="/v/bin/python", folder="/s/1")
    assert script.startswith("#!/bin/bash\n") and script.rstrip().endswith("exec /v/bin/python -m xtask.tools.sweep task /s/1")
    r = subprocess.run(["bash", "-n"], input=script, text=True)
    assert r.returncode == 0


def test_a_task_folder_holds_its_status_and_the_status_table_counts_states(tmp_path):
    sweep = _sweep(tmp_path)
    task = sweep.tasks[0]
    assert tool.read_status(sweep, task) == {"state": "not started", "attempts": []}
    rows = [tool.Row(task, "done", "7", "pushed", "0", Path("l")), tool.Row(task, "stopped", "8", "x", "1", Path("l"))]
    text = tool.format_rows(rows)
    assert text.splitlines()[0].split() == ["task", "state", "job", "gpus", "detail"]
    assert text.splitlines()[-1] == "2 tasks: 1 done, 1 stopped"


@pytest.mark.parametrize("sig,requeue", [(signal.SIGTERM, False), (signal.SIGUSR1, True)])
def test_a_signal_to_the_task_stops_the_whole_step_with_sigterm_and_waits_for_it(tmp_path, sig, requeue):
    # the step's shell saves on SIGTERM (as the train stage does) after a child of its own was killed with it
    marker = tmp_path / "saved"
    body = f'trap "sleep 0.5; echo saved > {marker}; exit 3" TERM; sleep 30 & wait'
    timer = threading.Timer(1.0, os.kill, (os.getpid(), sig))
    with open(tmp_path / "log", "w") as log, tool._Stop() as stop:
        timer.start()
        rc = tool._step(["sh", "-c", body], tmp_path, os.environ, log, stop)
    timer.join()
    assert rc == 3 and marker.read_text() == "saved\n"
    assert stop.signal == sig and stop.requeue is requeue


def _repo(tmp_path, where="slurm"):
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["launch"]["where"] = where
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    for cmd in (["git", "init", "-q"], GIT + ["add", "-A"], GIT + ["commit", "-qm", "p"],
                ["git", "init", "-q", "--bare", str(tmp_path / "remote.git")],
                ["git", "remote", "add", "origin", str(tmp_path / "remote.git")]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)
    return repo


def test_submit_refuses_what_tasks_could_not_run_one_line_each(tmp_path):
    repo = _repo(tmp_path, where="host")
    with pytest.raises(XTaskError, match="launch.where is 'host': set launch.where: slurm"):
        tool.submit(repo, load_params(repo / "params.yaml"), [], os.environ)
    repo = _repo(tmp_path / "b")
    params = load_params(repo / "params.yaml")
    with pytest.raises(XTaskError, match=r"HEAD [0-9a-f]{12} is on no branch of the git remote 'origin'"):
        tool.submit(repo, params, [], os.environ)
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n# edited\n")
    with pytest.raises(XTaskError, match="tracked files are modified: commit them first"):
        tool.submit(repo, params, [], os.environ)
    subprocess.run(GIT + ["commit", "-qam", "e"], cwd=repo, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD"], cwd=repo, check=True, capture_output=True)
    (repo / ".dvc").mkdir()  # a DVC repository without a remote (what `dvc init` makes, minus a second dvc call)
    (repo / ".dvc" / "config").write_text("[core]\n    autostage = false\n")
    subprocess.run(GIT + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(GIT + ["commit", "-qm", "dvc"], cwd=repo, check=True)
    subprocess.run(["git", "push", "-q", "origin", "HEAD"], cwd=repo, check=True, capture_output=True)
    with pytest.raises(XTaskError, match="no default DVC remote in .dvc/config"):
        tool.submit(repo, params, [], os.environ)
    assert not (repo / "sweeps").exists()  # nothing written before every check passed


def test_status_without_a_sweep_names_the_folder_and_the_command(tmp_path):
    with pytest.raises(XTaskError, match="no sweep yet .* xtask.tools.sweep submit"):
        tool.latest(tmp_path, SlurmConfig())
    with pytest.raises(XTaskError, match="not a sweep folder"):
        tool.load(tmp_path)
