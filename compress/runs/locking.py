"""One `compress run` per run folder: a lock file holding the owner's PID, host and start time.

The lock (`<run>/run.lock`, JSON) is created with O_CREAT | O_EXCL, so of two runs started at
once exactly one gets it; the other stops with a RunFolderError naming the holder. A lock whose
process is gone (same host, `os.kill(pid, 0)` finds no process) is taken over, with a log line.
A lock from another host cannot be checked and is never taken over: its message says which
file to delete. The lock is removed when the run ends, by an exception too.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from compress.errors import RunFolderError

LOCK_FILE = "run.lock"
_CREATING_GRACE_S = 2.0  # an empty lock younger than this is being written by its owner right now


@contextmanager
def run_lock(run_dir: Path, log: Callable[[str], None] = print) -> Iterator[dict[str, Any]]:
    """Hold `run_dir`'s lock for the `with` block; yields the lock's content."""
    path = Path(run_dir) / LOCK_FILE
    mine = acquire(path, log)
    try:
        yield mine
    finally:
        release(path, mine)


def acquire(path: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Create the lock file at `path`, taking over a stale one; RunFolderError while a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "started_ns": time.time_ns()}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None and _age_s(path) < _CREATING_GRACE_S:
                time.sleep(0.05)
                continue
            if holder is not None and holder_alive(holder):
                raise _held_error(path, holder) from None
            _take_over(path, holder, log)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(mine, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return mine


def release(path: Path, mine: dict[str, Any]) -> None:
    """Remove the lock if it is still ours (a lock taken over by someone else stays)."""
    if read_lock(path) == mine:
        path.unlink(missing_ok=True)


def read_lock(path: Path) -> dict[str, Any] | None:
    """The lock's content; None when it is gone, empty or not a lock (a writer died mid-creation)."""
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else None


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the lock's process may still run: True unless it is on this host and gone."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _take_over(path: Path, stale: dict[str, Any] | None, log: Callable[[str], None]) -> None:
    """Move the stale lock aside (atomic), check it is the one judged stale, and drop it."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:  # another process took it over first
        return
    if read_lock(aside) != stale:  # a live lock created since we looked: put it back
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink()
        return
    aside.unlink()
    who = f"PID {stale['pid']} (started {stale.get('started', '?')})" if stale else "an unreadable lock"
    log(f"run lock: {path} was held by {who}, which is no longer running; taking it over")


def _held_error(path: Path, holder: dict[str, Any]) -> RunFolderError:
    pid, host = holder["pid"], holder.get("host", "?")
    where = "" if host == socket.gethostname() else f" on host {host}"
    return RunFolderError(
        f"{path.parent} is in use by another compress run: PID {pid}{where}, started {holder.get('started', '?')}",
        f"wait for it to finish or stop it (kill {pid}); if PID {pid} is not a compress run, delete {path}",
    )


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
