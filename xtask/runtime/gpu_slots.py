"""Which GPU a single-process job takes on a box with several: the least-loaded one with a free slot.

``dvc queue start -j N`` starts N jobs that know nothing of each other. Each one, when it asks for
``device: auto`` or ``cuda`` and sees more than one GPU, takes a *slot*: an exclusive ``flock`` on
``<lock dir>/gpu-<id>.slot<j>.lock``, held for the life of the process. The kernel drops the lock when
the process dies however it dies, so a killed job never leaves a stale slot and there is nothing to
clean up. ``XTASK_JOBS_PER_GPU`` (J, default 1) slots per GPU.

When every slot is taken the job *waits* (polling, after one line saying so) rather than doubling up
on a GPU: J is the statement of how many jobs fit in one GPU's memory, and a job that exceeds it
fails with out-of-memory halfway through, or slows every job on that GPU. Waiting can only delay.

Slots are named after the GPU's UUID, so jobs with different ``CUDA_VISIBLE_DEVICES`` (or inside
containers) agree on which GPU is which; the index returned is within the visible set, as torch
numbers devices. Nothing here changes what a run computes, so it lives in xtask/runtime and is no
stage's dependency; it imports neither torch nor the training code (the caller passes what it knows).
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from xtask.common.errors import XTaskError

JOBS_PER_GPU = "XTASK_JOBS_PER_GPU"
LOCK_DIR = "XTASK_GPU_LOCK_DIR"
WAIT_S = "XTASK_GPU_WAIT_S"  # give up (one-line error) after this long; unset: wait as long as it takes
DEFAULT_LOCK_DIR = "xtask-gpu-locks"  # under the system temp dir: shared by every job on the box
POLL_S = 2.0  # cheap (one non-blocking flock per slot); a job waits for others that run for hours


@dataclass(frozen=True)
class Settings:
    lock_dir: Path
    per_gpu: int
    wait_s: Optional[float]  # None: no limit


@dataclass(frozen=True)
class Claim:
    index: int      # within the visible devices: cuda:<index>
    key: str        # the GPU's identity in the lock file name
    slot: int
    path: Path
    fd: int         # open for the life of the process: closing it would free the slot


def lock_dir(env: Mapping[str, str], tmp: Optional[str] = None) -> Path:
    return Path(env.get(LOCK_DIR) or Path(tmp or tempfile.gettempdir()) / DEFAULT_LOCK_DIR)


def settings(env: Mapping[str, str], tmp: Optional[str] = None) -> Settings:
    """The slot settings in ``env``; a bad value is one line naming the variable."""
    raw = env.get(JOBS_PER_GPU, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise XTaskError(f"{JOBS_PER_GPU}={raw!r}: expected an integer >= 1 (jobs that share one GPU)")
    wait = env.get(WAIT_S)
    try:
        wait_s = None if wait in (None, "") else float(wait)
    except ValueError:
        wait_s = -1.0
    if wait_s is not None and not wait_s >= 0:
        raise XTaskError(f"{WAIT_S}={wait!r}: expected seconds >= 0 (or unset: wait as long as it takes)")
    return Settings(lock_dir(env, tmp), int(raw), wait_s)


def needs_slot(count: int, env: Mapping[str, str]) -> bool:
    """Only a single process that sees several GPUs chooses: under torchrun (LOCAL_RANK) each rank
    has its own GPU already, and with one GPU there is nothing to choose (``-j`` alone decides how
    many jobs share it, as before)."""
    return count > 1 and "LOCAL_RANK" not in env


def physical_keys(count: int, env: Mapping[str, str], uuid_of: Optional[Callable[[int], str]] = None
                  ) -> list[str]:
    """One stable name per visible device, for the lock files: its UUID when ``uuid_of`` gives one,
    else its CUDA_VISIBLE_DEVICES entry (a physical index or UUID), else its index."""
    keys: list[str] = []
    if uuid_of is not None:
        try:
            keys = [str(uuid_of(k)) for k in range(count)]
        except Exception:  # noqa: BLE001 - any failure: fall back to the names the environment gives
            keys = []
    if not keys or len(set(keys)) != count:
        visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        keys = visible[:count] if len(visible) >= count else [str(k) for k in range(count)]
    return [re.sub(r"[^A-Za-z0-9_-]", "_", k) for k in keys]


def slot_path(directory: Path, key: str, slot: int) -> Path:
    return directory / f"gpu-{key}.slot{slot}.lock"


def preference(free: Sequence[Sequence[int]], per_gpu: int) -> Optional[tuple[int, int]]:
    """(GPU, slot) to take given each GPU's free slots: the GPU with the fewest jobs (ties: the lowest
    index), its lowest free slot; None when no slot is free. Pure: the policy, tested as such."""
    candidates = [(per_gpu - len(slots), k, min(slots)) for k, slots in enumerate(free) if slots]
    if not candidates:
        return None
    _, k, slot = min(candidates)
    return k, slot


def ensure_dir(directory: Path) -> None:
    """Create the shared lock folder, writable by every user (sticky, as /tmp), so that all jobs on the
    box meet there whoever runs them."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(directory, 0o1777)
    except OSError:
        pass  # another user made it first


def _try_lock(path: Path) -> Optional[int]:
    """An fd holding ``path``'s exclusive lock, or None when another process holds it. Read-only with
    O_NOFOLLOW: a lock needs no write access (another user's lock file works) and follows no link."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise XTaskError(f"{path}: cannot open the GPU slot lock ({err.strerror}); set {LOCK_DIR} to a "
                         "folder every job on this box can write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise XTaskError(f"{path}: cannot lock the GPU slot ({err.strerror})") from None
    return fd


def try_claim(keys: Sequence[str], cfg: Settings) -> Optional[Claim]:
    """One pass: lock every free slot, keep the preferred one, release the rest. None if all are taken."""
    ensure_dir(cfg.lock_dir)
    held: dict[tuple[int, int], int] = {}
    try:
        for k, key in enumerate(keys):
            for slot in range(cfg.per_gpu):
                fd = _try_lock(slot_path(cfg.lock_dir, key, slot))
                if fd is not None:
                    held[(k, slot)] = fd
        free = [[s for (g, s) in held if g == k] for k in range(len(keys))]
        choice = preference(free, cfg.per_gpu)
        if choice is None:
            return None
        k, slot = choice
        fd = held.pop(choice)
        return Claim(k, keys[k], slot, slot_path(cfg.lock_dir, keys[k], slot), fd)
    finally:
        for fd in held.values():
            os.close(fd)


def claim(keys: Sequence[str], cfg: Settings, *, log: Callable[[str], None] = print,
          poll_s: float = POLL_S, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> Claim:
    """A slot on one of ``keys``' GPUs, waiting while all are taken (one log line when it starts to)."""
    start, said = clock(), False
    while True:
        got = try_claim(keys, cfg)
        if got is not None:
            return got
        waited = clock() - start
        if cfg.wait_s is not None and waited >= cfg.wait_s:
            raise XTaskError(f"all {len(keys)} GPUs x {cfg.per_gpu} slots ({JOBS_PER_GPU}) stayed taken for "
                             f"{waited:.0f} s ({WAIT_S}); locks in {cfg.lock_dir}")
        if not said:
            log(f"gpu: all {len(keys)} GPUs x {cfg.per_gpu} slots ({JOBS_PER_GPU}={cfg.per_gpu}) are taken by "
                f"other jobs (locks in {cfg.lock_dir}); waiting for one to finish")
            said = True
        sleep(poll_s if cfg.wait_s is None else max(0.0, min(poll_s, cfg.wait_s - waited)))


_held: Optional[Claim] = None  # this process's slot: claimed once, kept until the process ends


def gpu_for_this_process(count: int, env: Mapping[str, str] = os.environ,
                         uuid_of: Optional[Callable[[int], str]] = None) -> Optional[int]:
    """The visible CUDA index this process should use, its slot held until it exits; None when it
    need not choose (see ``needs_slot``: then plain ``cuda`` as before). Several calls in one process
    (a stage that resolves the device per dataset) return the same GPU."""
    global _held
    if not needs_slot(count, env):
        return None
    if _held is None:
        cfg = settings(env)
        _held = claim(physical_keys(count, env, uuid_of), cfg, log=lambda line: print(line, file=sys.stderr,
                                                                                     flush=True))
        print(f"gpu: cuda:{_held.index} of {count} visible (slot {_held.slot + 1} of {cfg.per_gpu}, "
              f"{_held.path})", file=sys.stderr, flush=True)
    return _held.index
