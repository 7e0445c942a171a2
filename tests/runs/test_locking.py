"""One run per run folder: a live holder is named, a dead one's lock is taken over, release on errors."""

import json
import os
import socket
import subprocess
import time

import pytest

from compress.errors import RunFolderError
from compress.runs.locking import LOCK_FILE, acquire, read_lock, run_lock
from compress.pipeline import RunOptions, run_recipe
from compress.recipe import validate_recipe
from compress.stages import train as train_stage
from tests.conftest import tiny_recipe


def write_lock(folder, pid, host=None, started="2026-01-01T00:00:00"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": started}))


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_lock_holds_pid_host_start_and_is_released(tmp_path):
    with run_lock(tmp_path) as mine:
        on_disk = read_lock(tmp_path / LOCK_FILE)
        assert on_disk == mine and on_disk["pid"] == os.getpid() and on_disk["host"] == socket.gethostname()
        assert on_disk["started"]
        with pytest.raises(RunFolderError, match=f"PID {os.getpid()}"):
            acquire(tmp_path / LOCK_FILE)
    assert not (tmp_path / LOCK_FILE).exists()


def test_live_holder_refuses_second_run(tmp_path):
    raw = tiny_recipe(tmp_path)
    holder = subprocess.Popen(["sleep", "30"])
    try:
        write_lock(tmp_path / "artifacts" / "tiny", holder.pid)
        with pytest.raises(RunFolderError) as error:
            run_recipe(validate_recipe(raw), RunOptions(show_progress=False, log=lambda _: None))
        assert f"PID {holder.pid}" in error.value.message and "kill" in error.value.hint
    finally:
        holder.kill()
        holder.wait()
    assert read_lock(tmp_path / "artifacts" / "tiny" / LOCK_FILE)["pid"] == holder.pid  # not ours to remove


def test_stale_lock_is_taken_over_with_a_log_line(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    messages = []
    with run_lock(tmp_path, messages.append) as mine:
        assert mine["pid"] == os.getpid()
    assert any(f"PID {pid}" in m and "taking it over" in m for m in messages)


def test_empty_lock_left_by_a_crash_is_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text("")
    old = time.time() - 60
    os.utime(tmp_path / LOCK_FILE, (old, old))
    messages = []
    with run_lock(tmp_path, messages.append):
        pass
    assert any("unreadable lock" in m for m in messages)


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid(), host="elsewhere")
    with pytest.raises(RunFolderError, match="on host elsewhere") as error:
        acquire(tmp_path / LOCK_FILE)
    assert str(tmp_path / LOCK_FILE) in error.value.hint


def test_lock_released_when_a_stage_fails(tmp_path, monkeypatch):
    def fail(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(train_stage, "run", fail)
    with pytest.raises(RuntimeError, match="boom"):
        run_recipe(validate_recipe(tiny_recipe(tmp_path)), RunOptions(show_progress=False, log=lambda _: None))
    assert not (tmp_path / "artifacts" / "tiny" / LOCK_FILE).exists()
