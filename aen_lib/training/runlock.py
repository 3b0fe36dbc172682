"""One writer per run folder, and no orphaned workers.

Two processes training into the same run folder would interleave checkpoints and metrics. Two guards prevent it:

* :class:`RunLock` holds an exclusive ``flock`` on ``<run>/.lock`` for the run's lifetime and writes who holds it
  (pid, hostname, start time, command line) inside. A second acquisition, from any process on the machine, fails at
  once with :class:`RunLockedError` naming the holder. The kernel drops the lock when the holder exits, however it
  exits (``SIGKILL`` included), so a stale ``.lock`` file never blocks a relaunch. ``flock`` is local to one machine
  (on network file systems it may not be shared between hosts): the hostname in the message says where to look.
* :func:`exit_with_parent` makes a worker process exit when its launcher dies. Killing the ``torchrun`` launcher
  with ``SIGKILL`` gives its workers no chance to be told; without this guard they keep training and writing, and a
  relaunch would race them. A daemon thread polls the parent pid; when the worker has been re-parented it sends
  itself ``SIGTERM`` and, if that does not end it within ``grace_s``, exits with :func:`os._exit`.

Use in the DDP runner (:mod:`aen_lib.training.distributed`)::

    exit_with_launcher()                     # every process: a no-op unless torchrun started it
    with RunLock(out_dir):                   # rank 0 (or a one-process run) for the whole run
        ...train, checkpoint, save...
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"

__all__ = ["RunLock", "RunLockedError", "exit_with_launcher", "exit_with_parent", "lock_holder"]

#: Set by ``torchrun`` (torch.distributed.elastic) in every worker it starts.
TORCHRUN_ENV = "TORCHELASTIC_RUN_ID"


class RunLockedError(RuntimeError):
    """The run folder is locked by another live process (its pid is in the message and in :attr:`holder`)."""

    def __init__(self, message: str, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.holder = holder


def lock_holder(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the last holder of ``folder``'s lock wrote (pid, hostname, started, argv), or None if nothing readable.

    This says who *took* the lock, not whether it is still held; :class:`RunLock` is the test for that.
    """
    path = Path(folder) / LOCK_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunLock:
    """Exclusive lock on a run folder, held from :meth:`acquire` until :meth:`release` or the process's exit.

    ``RunLock(folder).acquire()`` creates ``folder`` if needed, takes a non-blocking ``flock`` on
    ``folder/.lock`` and writes ``{"pid", "hostname", "started", "argv"}`` into it. If another process holds it,
    raises :class:`RunLockedError` at once (no waiting), naming that process. Usable as a context manager.
    Locks are per open file, so a second ``RunLock`` on the same folder in the same process is refused too.
    Dropping the object does not release the lock (the descriptor stays open until :meth:`release` or exit), so
    ``RunLock(out_dir).acquire()`` alone holds it for the rest of the process.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "RunLock":
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.folder)
            if holder:
                who = (f"pid {holder.get('pid')} on {holder.get('hostname')} (started {holder.get('started')}: "
                       f"{' '.join(map(str, holder.get('argv', [])))[:200]})")
            else:
                who = "another process (it has not written its pid yet)"
            raise RunLockedError(
                f"run folder {self.folder} is in use by {who}; two runs must not write one folder. Wait for it to "
                f"finish, stop it (kill {holder.get('pid') if holder else '<pid>'}), or use another out_dir", holder
            ) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "hostname": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "argv": list(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its content only matters while the lock is held)."""
        import fcntl

        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_GUARD_STARTED = False


def exit_with_parent(*, poll_s: float = 1.0, grace_s: float = 10.0, parent_pid: int | None = None) -> int:
    """Make this process end when its parent (e.g. the ``torchrun`` launcher) dies; returns the parent pid watched.

    A daemon thread checks ``os.getppid()`` every ``poll_s`` seconds. Once it differs from ``parent_pid`` (default:
    the parent now), the process sends itself ``SIGTERM`` (default action: terminate; a handler, if installed, may
    clean up) and calls ``os._exit(70)`` if it is still alive ``grace_s`` seconds later. Calling it again is a
    no-op. Raises ``RuntimeError`` if the parent is already gone (the process was re-parented to pid 1).
    """
    global _GUARD_STARTED
    parent = os.getppid() if parent_pid is None else int(parent_pid)
    if os.getppid() != parent or parent == 1:
        raise RuntimeError(f"the parent process is already gone (parent pid now {os.getppid()}); exiting is safer "
                           "than running as an orphan")
    if _GUARD_STARTED:
        return parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        logger.error("parent process %d died; pid %d stops so that no orphan keeps writing", parent, os.getpid())
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(70)

    threading.Thread(target=watch, name="aen_lib-exit-with-parent", daemon=True).start()
    _GUARD_STARTED = True
    return parent


def exit_with_launcher(**kwargs: Any) -> int | None:
    """:func:`exit_with_parent` if ``torchrun`` started this process (``$TORCHELASTIC_RUN_ID`` is set), else None.

    A plain ``python -m ...`` run is left alone: its parent is a shell, which may legitimately exit first (``nohup``).
    Keyword arguments go to :func:`exit_with_parent`.
    """
    if not os.environ.get(TORCHRUN_ENV):
        return None
    return exit_with_parent(**kwargs)
