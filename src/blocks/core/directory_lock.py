"""One writer per directory: an exclusive ``flock`` on a lock file inside it.

Theory of operation: ``flock`` locks belong to an open file description, not to a process, so
a second lock of the same directory is refused in the same process as well as in another one,
and the kernel drops the lock when the holder dies, even by ``kill -9``: a crash never leaves
a directory locked. The lock file is created if missing and never removed; only the lock on
it means anything. The core log, the kv engine and the sequencer's data directory each take
one before they touch their files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from blocks.core.errors import FailedPrecondition

__all__ = ["LOCK_FILE", "DirectoryLock"]

LOCK_FILE = "LOCK"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class DirectoryLock:
    """An exclusive ``flock`` on ``<directory>/<name>``, taken when built.

    Raises ``FailedPrecondition`` when another holder (in this process or another) has it,
    and ``OSError`` when the lock file cannot be opened or locked at all; either way nothing
    stays open. ``release`` drops it; it is idempotent.
    """

    __slots__ = ("_descriptor", "path")

    def __init__(self, directory: str | os.PathLike[str], *, name: str = LOCK_FILE) -> None:
        self.path = os.path.join(directory, name)
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | _CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FailedPrecondition(
                f"{os.fspath(directory)} is already open for writing (lock {self.path} is held)"
            ) from None
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor: int | None = descriptor

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def fileno(self) -> int:
        """The lock file's descriptor, for a holder that notes who it is in the file."""
        assert self._descriptor is not None, "the lock was released"
        return self._descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._descriptor, fcntl.LOCK_UN)
            os.close(self._descriptor)
            self._descriptor = None
