"""One writer per run directory: an advisory lock held for the life of the process that writes it.

``DIR/.trainmap.lock`` is locked with ``fcntl.flock`` (exclusive). The kernel releases the
lock when its holder exits, however it exits (SIGKILL included), so there is never a stale
lock to clean up by hand. The file itself is left in place and holds the holder's PID, host
and command, which a second writer reports::

    with RunLock(out, purpose="trainmap train"):
        ...  # only this process writes DIR

A second ``RunLock`` on the same directory (from this or another process) raises
:class:`RunLockedError` at once, or after waiting up to ``wait_s`` seconds for the holder to
finish. flock works between processes on one host and, on Linux, on NFS (where it is mapped
to fcntl byte-range locks).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
import warnings
from pathlib import Path

__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_path"]

#: Name of the lock file inside a run directory.
LOCK_NAME = ".trainmap.lock"
_POLL_S = 0.1


class RunLockedError(OSError):
    """Another process holds the run directory's lock; the message names its PID and host."""


class _DirectoryError(OSError):
    """A run directory that cannot be created or written (the message names it, not the lock file)."""

    def __str__(self) -> str:
        return self.strerror


def lock_path(directory: str | os.PathLike) -> Path:
    """``DIR/.trainmap.lock``."""
    return Path(directory) / LOCK_NAME


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file (PID, host, command), or a placeholder."""
    for _ in range(20):  # the holder writes right after locking: give it a moment
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "a process that has not written its PID yet"


class RunLock:
    """Exclusive lock of a run directory, as a context manager (or :meth:`acquire`/:meth:`release`).

    ``purpose`` goes into the lock file so that a refused writer learns what holds the
    directory. ``wait_s`` (default 0) is how long :meth:`acquire` retries before giving up.
    The directory is created when missing.
    """

    def __init__(self, directory: str | os.PathLike, *, purpose: str = "trainmap", wait_s: float = 0.0):
        self.directory = Path(directory)
        self.path = lock_path(directory)
        self.purpose = purpose
        self.wait_s = wait_s
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLockedError` naming the holder."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this RunLock")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted as the lock file must not redirect our writes.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise _DirectoryError(exc.errno, f"{self.directory}: cannot write in this directory "
                                             f"({exc.strerror or exc})") from None
        deadline = time.monotonic() + max(0.0, self.wait_s)
        said_waiting = False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                        raise
                    if time.monotonic() >= deadline:
                        raise RunLockedError(
                            f"{self.directory} is in use by {_holder(fd)}; one process writes a run "
                            f"directory at a time (lock file {self.path})"
                        ) from None
                    if not said_waiting:
                        warnings.warn(f"{self.directory} is in use by {_holder(fd)}; waiting up to "
                                      f"{self.wait_s:g} s for it", RuntimeWarning, stacklevel=2)
                        said_waiting = True
                    time.sleep(_POLL_S)
            os.ftruncate(fd, 0)
            command = " ".join(sys.argv) or sys.executable
            os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()} ({self.purpose}: {command})\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go of the lock (the lock file stays: removing it would race with a new holder)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()
