"""One writer per run folder (RunLock) and workers that exit with their launcher (exit_with_parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aen_lib.training.runlock import TORCHRUN_ENV, RunLock, RunLockedError, exit_with_launcher, exit_with_parent, lock_holder

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock and /proc are Linux features")

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


HOLDER = """
    import sys, time
    from aen_lib.training.runlock import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(120)
"""


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    holder = _python(HOLDER, str(run))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"in use by pid {holder.pid} on .*\(kill {holder.pid}\)") as err:
            RunLock(run).acquire()
        assert err.value.holder["pid"] == holder.pid
        assert lock_holder(run)["pid"] == holder.pid
        # a second launcher process is refused the same way
        second = _python("import sys; from aen_lib.training.runlock import RunLock; RunLock(sys.argv[1]).acquire()", str(run))
        _, stderr = second.communicate(timeout=60)
        assert second.returncode != 0 and f"in use by pid {holder.pid}" in stderr
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # the kernel released the lock with the killed holder: a relaunch takes it although .lock still names the dead pid
    with RunLock(run) as lock:
        assert lock.held and lock_holder(run)["pid"] == os.getpid()
    assert not lock.held
    with RunLock(run):  # released locks can be taken again
        with pytest.raises(RunLockedError):  # and a second lock in the same process is refused too
            RunLock(run).acquire()


LAUNCHER = """
    import os, subprocess, sys, time
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}  # what torchrun sets in its workers
    worker = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env)
    print(worker.pid, flush=True)
    time.sleep(120)
"""
WORKER = """
import sys, time
from pathlib import Path
from aen_lib.training.runlock import exit_with_launcher
assert exit_with_launcher(poll_s=0.1, grace_s=2.0) is not None
Path(sys.argv[1]).write_text("started")
while True:  # stands in for a training loop that keeps writing
    time.sleep(0.05)
"""


def test_worker_exits_when_its_launcher_is_killed(tmp_path):
    flag = tmp_path / "started"
    launcher = _python(LAUNCHER, WORKER, str(flag))
    worker_pid = int(launcher.stdout.readline())
    try:
        assert _wait_for(flag.exists), "worker did not start"
        assert _alive(worker_pid)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        assert _wait_for(lambda: not _alive(worker_pid), timeout=5.0), "orphaned worker kept running"
    finally:
        if _alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def test_without_the_guard_the_worker_would_be_orphaned(tmp_path):
    """The control: the same launcher and a worker without exit_with_parent leaves the worker running."""
    flag = tmp_path / "started"
    worker = WORKER.replace("assert exit_with_launcher(poll_s=0.1, grace_s=2.0) is not None", "")
    assert worker != WORKER
    launcher = _python(LAUNCHER, worker, str(flag))
    worker_pid = int(launcher.stdout.readline())
    try:
        assert _wait_for(flag.exists)
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        time.sleep(1.0)
        assert _alive(worker_pid)
    finally:
        os.kill(worker_pid, signal.SIGKILL)


def test_exit_with_parent_refuses_a_dead_parent():
    with pytest.raises(RuntimeError, match="parent process is already gone"):
        exit_with_parent(parent_pid=os.getppid() + 1_000_000)


def test_exit_with_launcher_leaves_plain_runs_alone(monkeypatch):
    monkeypatch.delenv(TORCHRUN_ENV, raising=False)
    assert exit_with_launcher() is None
