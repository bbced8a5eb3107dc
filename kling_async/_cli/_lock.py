"""Advisory file locks: one kling-async process at a time per journal and per output folder.

A lock is ``flock`` on a small file that stays open while it is held; the kernel drops it
when the process ends in any way (SIGKILL included), so a crash never leaves a stale lock.
Where ``flock`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

__all__ = ["FileLock", "LockedError"]


class LockedError(Exception):
    """Another process holds the lock."""


class FileLock:
    """An exclusive advisory lock on ``path``, taken at once or not at all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None

    def acquire(self) -> FileLock:
        """Take the lock; LockedError if another process holds it, OSError if the lock file
        cannot be opened."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock, documented
            return self
        handle = open(self.path, "ab")  # noqa: SIM115 - held open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise LockedError(str(self.path)) from None
        except OSError:
            handle.close()
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        """Let go of the lock (safe to call twice)."""
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
