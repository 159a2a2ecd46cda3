"""One writer per run directory: an exclusive advisory lock (``fcntl.flock``) on ``<dir>/.lock``.

Two processes training the same run directory would interleave their checkpoints and
metrics.jsonl. ``fit`` therefore holds ``run_dir_lock(run_dir)`` while it trains; a second
process asking for the same directory waits (saying once, on stderr, which process holds it) and
then resumes from where the first one finished, which for a finished run means it trains nothing.
That is what lets several experiments that share trained runs (e.g. the SAT family's) run at the
same time.

The lock is advisory and local: it serializes processes on one host (or on a file system with
working ``flock``). In a multi-process run only process 0 takes it. The kernel releases it when
the holder exits, killed or not, so a stale ``.lock`` file never blocks anyone.
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import time

try:
    import fcntl
except ImportError:  # (Windows: no flock; the lock is then a no-op)
    fcntl = None


@contextlib.contextmanager
def run_dir_lock(run_dir, *, timeout: float | None = None, poll: float = 2.0, what: str = "run directory"):
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the ``with`` block.

    ``timeout``: seconds to wait before ``TimeoutError`` (None waits as long as it takes)."""
    d = pathlib.Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start, told = time.monotonic(), False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if timeout is not None and time.monotonic() - start >= timeout:
                    raise TimeoutError(f"{what} {d} is locked by {_holder(fd)} (waited {timeout:g} s); "
                                       f"wait for it to finish or stop it") from None
                if not told:
                    print(f"[advjax] {what} {d} is in use by {_holder(fd)}; waiting for it to finish",
                          file=sys.stderr, flush=True)
                    told = True
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def is_locked(run_dir) -> bool:
    """Whether another process holds ``run_dir``'s lock right now (a snapshot: it may change the next
    moment, so use it to choose an order of work, not to exclude anyone)."""
    if fcntl is None or not (pathlib.Path(run_dir) / ".lock").exists():
        return False
    fd = os.open(pathlib.Path(run_dir) / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _holder(fd) -> str:
    try:
        return os.pread(fd, 200, 0).decode().strip() or "another process"
    except OSError:
        return "another process"
