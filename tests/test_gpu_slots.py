"""Queued jobs spread over the visible GPUs: slot locks (xtask/runtime/gpu_slots.py), on the CPU.

Other jobs are real processes holding real locks; they report their slot through a pipe and hold it
until their stdin closes, so nothing here depends on timing. The GPUs are names ("0", "1"): the locks
never touch a device, and select_device is checked with torch.cuda faked.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from xtask.common.errors import XTaskError
from xtask.runtime import gpu_slots
from xtask.core import hardware

ROOT = Path(__file__).resolve().parents[1]
HOLDER = """
import sys
from xtask.runtime import gpu_slots as g
cfg = g.settings({g.LOCK_DIR: sys.argv[1], g.JOBS_PER_GPU: sys.argv[2], g.WAIT_S: "0"})
c = g.claim(sys.argv[3].split(","), cfg, log=lambda line: None)
print(c.key, c.slot, flush=True)
sys.stdin.read()  # hold the slot until the test closes the pipe (or kills this process)
"""


class Holder:
    """Another job: a process that takes a slot and keeps it."""

    def __init__(self, lock_dir, keys, per_gpu=1):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(per_gpu), ",".join(keys)],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert line, "the holder got no slot"
        self.key, self.slot = line[0], int(line[1])

    def kill(self):
        self.proc.kill()
        self.proc.wait()  # dead: the kernel has dropped its lock

    def release(self):
        self.proc.stdin.close()
        self.proc.wait()


@pytest.fixture
def holders():
    started = []
    yield lambda *a, **k: started.append(Holder(*a, **k)) or started[-1]
    for h in started:
        if h.proc.poll() is None:
            h.kill()


def _cfg(tmp_path, per_gpu=1, wait_s=None):
    return gpu_slots.Settings(tmp_path / "locks", per_gpu, wait_s)


def test_the_policy_takes_the_least_loaded_gpu_then_its_lowest_free_slot():
    assert gpu_slots.preference([[0], [0]], 1) == (0, 0)
    assert gpu_slots.preference([[], [0]], 1) == (1, 0)
    assert gpu_slots.preference([[0, 1], [1]], 2) == (0, 0)   # GPU 1 already runs a job
    assert gpu_slots.preference([[1], [0, 1]], 2) == (1, 0)   # GPU 0 runs one (in slot 0): GPU 1 is emptier
    assert gpu_slots.preference([[], []], 2) is None


def test_a_single_process_takes_gpu_0_and_holds_it(tmp_path):
    c = gpu_slots.try_claim(["0", "1"], _cfg(tmp_path))
    assert (c.index, c.slot, c.path.name) == (0, 0, "gpu-0.slot0.lock")
    # the same process asking again (a new fd) is refused too: the slot is held, not just created
    assert gpu_slots.try_claim(["0"], _cfg(tmp_path)) is None


def test_with_gpu_0_taken_by_another_job_it_takes_gpu_1(tmp_path, holders):
    other = holders(tmp_path / "locks", ["0", "1"])
    assert (other.key, other.slot) == ("0", 0)
    assert gpu_slots.claim(["0", "1"], _cfg(tmp_path)).index == 1


def test_two_jobs_per_gpu_spread_first_then_share(tmp_path, holders):
    keys = ["0", "1"]
    taken = [(h.key, h.slot) for h in (holders(tmp_path / "locks", keys, 2) for _ in range(3))]
    assert taken == [("0", 0), ("1", 0), ("0", 1)]
    c = gpu_slots.try_claim(keys, _cfg(tmp_path, per_gpu=2))
    assert (c.index, c.slot) == (1, 1)
    assert gpu_slots.try_claim(keys, _cfg(tmp_path, per_gpu=2)) is None  # 2 GPUs x 2 slots, all taken


def test_a_killed_job_frees_its_slot(tmp_path, holders):
    first, second = holders(tmp_path / "locks", ["0", "1"]), holders(tmp_path / "locks", ["0", "1"])
    assert gpu_slots.try_claim(["0", "1"], _cfg(tmp_path)) is None
    second.kill()
    assert gpu_slots.try_claim(["0", "1"], _cfg(tmp_path)).key == second.key
    assert first.proc.poll() is None


def test_when_all_slots_are_taken_it_waits_says_so_once_and_gives_up_after_the_limit(tmp_path, holders):
    holders(tmp_path / "locks", ["0", "1"]), holders(tmp_path / "locks", ["0", "1"])
    said, now = [], [0.0]

    def sleep(s):  # a fake clock: no real waiting
        now[0] += s

    with pytest.raises(XTaskError, match=r"all 2 GPUs x 1 slots .* stayed taken for 10 s"):
        gpu_slots.claim(["0", "1"], _cfg(tmp_path, wait_s=10), log=said.append, poll_s=1,
                        clock=lambda: now[0], sleep=sleep)
    assert len(said) == 1 and "waiting" in said[0] and now[0] == 10


def test_a_waiting_job_takes_the_slot_a_finished_job_frees(tmp_path, holders):
    a, b = holders(tmp_path / "locks", ["0", "1"]), holders(tmp_path / "locks", ["0", "1"])
    said = []
    c = gpu_slots.claim(["0", "1"], _cfg(tmp_path), log=said.append, sleep=lambda s: b.release())
    assert c.key == b.key and len(said) == 1
    assert a.proc.poll() is None


def test_settings_come_from_the_environment_with_one_line_errors(tmp_path):
    s = gpu_slots.settings({}, tmp=str(tmp_path))
    assert s == gpu_slots.Settings(tmp_path / gpu_slots.DEFAULT_LOCK_DIR, 1, None)
    s = gpu_slots.settings({gpu_slots.LOCK_DIR: "/x", gpu_slots.JOBS_PER_GPU: "3", gpu_slots.WAIT_S: "60"})
    assert s == gpu_slots.Settings(Path("/x"), 3, 60.0)
    for env, var in [({gpu_slots.JOBS_PER_GPU: "0"}, gpu_slots.JOBS_PER_GPU),
                     ({gpu_slots.JOBS_PER_GPU: "two"}, gpu_slots.JOBS_PER_GPU),
                     ({gpu_slots.WAIT_S: "soon"}, gpu_slots.WAIT_S)]:
        with pytest.raises(XTaskError, match=var):
            gpu_slots.settings(env)


def test_gpus_are_named_by_uuid_else_by_their_visible_entry():
    assert gpu_slots.physical_keys(2, {}, lambda k: f"GPU-{k}aa") == ["GPU-0aa", "GPU-1aa"]

    def broken(k):
        raise RuntimeError("no uuid")
    assert gpu_slots.physical_keys(2, {"CUDA_VISIBLE_DEVICES": "4,6"}, broken) == ["4", "6"]
    assert gpu_slots.physical_keys(2, {}, None) == ["0", "1"]
    assert gpu_slots.physical_keys(1, {"CUDA_VISIBLE_DEVICES": "MIG-a/b"}) == ["MIG-a_b"]  # a safe file name


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """torch.cuda with ``n`` GPUs (set ``.n``); set_device recorded; no slot held by this process yet."""
    class Fake:
        n, current = 3, None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: Fake.n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: Fake.n)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(Fake, "current", d))
    monkeypatch.setattr(hardware, "_uuid", lambda k: f"GPU-fake{k}")
    monkeypatch.setattr(gpu_slots, "_held", None)
    Fake.env = {gpu_slots.LOCK_DIR: str(tmp_path / "locks")}
    yield Fake
    if gpu_slots._held is not None:
        import os
        os.close(gpu_slots._held.fd)


def test_select_device_takes_a_free_gpu_and_keeps_it_for_the_process(fake_gpus, tmp_path, holders):
    holders(tmp_path / "locks", ["GPU-fake0"])
    assert hardware.select_device("auto", fake_gpus.env) == torch.device("cuda", 1)
    assert fake_gpus.current == 1
    assert hardware.select_device("cuda", fake_gpus.env) == torch.device("cuda", 1)  # the same slot again


def test_select_device_keeps_todays_behaviour_with_one_gpu_under_torchrun_and_on_cpu(fake_gpus, tmp_path):
    assert hardware.select_device("cpu", fake_gpus.env) == torch.device("cpu")
    assert hardware.select_device("auto", {**fake_gpus.env, "LOCAL_RANK": "1"}) == torch.device("cuda")
    fake_gpus.n = 1
    assert hardware.select_device("auto", fake_gpus.env) == torch.device("cuda")
    assert not (tmp_path / "locks").exists() and fake_gpus.current is None
    fake_gpus.n = 0
    assert hardware.select_device("auto", fake_gpus.env) == torch.device("cpu")
    with pytest.raises(XTaskError, match="no CUDA device"):
        hardware.select_device("cuda", fake_gpus.env)
