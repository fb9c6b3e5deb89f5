"""A sequencer server's own state in its data directory: one owner, and a high-water mark.

Theory of operation
-------------------
**One process per data directory.** ``DataDirLock`` takes an exclusive, non-blocking
``flock`` on ``<data_dir>/server.lock`` for the life of the server. A second server started on
the same directory fails at once with ``FailedPrecondition`` naming the holder's pid, instead
of quietly leasing another worker id and sharing the ticket state. The kernel drops the lock
when the process dies, kill -9 included, so a crash never leaves the directory locked.

**IDs never go backwards across a restart.** ``HighWater`` keeps ``issued_below_ms`` in
``<data_dir>/highwater.state``: every ID this server has *handed out* carries a timestamp
below it. The service persists the mark before it replies with IDs whose timestamp reaches
it (``cover``), moving it ``ahead_ms`` past them so that a write happens about once per
``ahead_ms`` of issuing, not per request. A restarted server starts its generator at the mark
(``Snowflake(min_timestamp_ms=...)``), so even with its wall clock stepped back it issues no
ID below one it issued before: it waits for its clock to pass the mark, or refuses while the
step is larger than the generator's ``backwards_wait_max_ms``.

Pure parts are the arithmetic of ``plan_cover``; the file work is ``statefile``'s atomic,
checksummed replace (fsync'd unless told otherwise).
"""

from __future__ import annotations

import os

from blocks.core.codec import pack, unpack
from blocks.core.directory_lock import DirectoryLock
from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument
from blocks.sequencer.statefile import read_state, write_state

__all__ = ["HIGHWATER_AHEAD_MS", "DataDirLock", "HighWater", "plan_cover"]

HIGHWATER_AHEAD_MS = 2_000
"""How far past the IDs it covers the persisted mark is pushed (one fsync per this much)."""

LOCK_FILE = "server.lock"
HIGHWATER_FILE = "highwater.state"


class DataDirLock:
    """Exclusive ownership of a data directory by one process (``flock``, released on exit),
    the holder's pid noted in the lock file for the message a second server gets."""

    __slots__ = ("_data_dir", "_lock", "path")

    def __init__(self, data_dir: str) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self._data_dir = data_dir
        self.path = os.path.join(data_dir, LOCK_FILE)
        self._lock: DirectoryLock | None = None

    def acquire(self) -> None:
        """Take the lock; ``FailedPrecondition`` if another process holds it."""
        if self._lock is not None:
            return
        try:
            lock = DirectoryLock(self._data_dir, name=LOCK_FILE)
        except FailedPrecondition:
            raise FailedPrecondition(
                f"data dir {self._data_dir} is in use by another sequencer "
                f"(pid {_holder(self.path)}); each server needs its own --data-dir"
            ) from None
        os.ftruncate(lock.fileno(), 0)
        os.pwrite(lock.fileno(), f"{os.getpid()}\n".encode(), 0)
        self._lock = lock

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _holder(path: str) -> str:
    """The pid the holder noted in the lock file, or ``unknown``."""
    try:
        with open(path, "rb") as file:
            noted = file.read(32)
    except OSError:
        return "unknown"
    return noted.decode(errors="replace").strip() or "unknown"


def plan_cover(mark_ms: int, timestamp_ms: int, ahead_ms: int) -> int | None:
    """The new mark to persist before handing out an ID of ``timestamp_ms``, or None if the
    current ``mark_ms`` already covers it (every handed-out timestamp stays below the mark)."""
    if timestamp_ms < mark_ms:
        return None
    return timestamp_ms + ahead_ms


class HighWater:
    """The persisted bound below which every handed-out ID's timestamp lies."""

    __slots__ = ("_ahead_ms", "_fsync", "_path", "mark_ms", "writes")

    def __init__(
        self, data_dir: str, *, ahead_ms: int = HIGHWATER_AHEAD_MS, fsync: bool = True
    ) -> None:
        if not 0 < ahead_ms <= 3_600_000:
            raise InvalidArgument("ahead_ms must be in (0, 3,600,000]")
        os.makedirs(data_dir, exist_ok=True)
        self._path = os.path.join(data_dir, HIGHWATER_FILE)
        self._ahead_ms = ahead_ms
        self._fsync = fsync
        self.mark_ms = self._load()
        self.writes = 0

    def _load(self) -> int:
        data = read_state(self._path)
        if data is None:
            return 0
        try:
            value = unpack(data)
        except InvalidArgument as error:
            raise Corruption(f"{self._path} does not decode: {error}") from None
        if type(value) is not int or not 0 <= value < 1 << 62:
            raise Corruption(f"{self._path} holds no timestamp")
        return value

    def cover(self, timestamp_ms: int) -> None:
        """Persist a mark above ``timestamp_ms`` unless the current one is already above it.
        Call before the ID leaves the process: after a crash the mark still covers it."""
        new_mark = plan_cover(self.mark_ms, timestamp_ms, self._ahead_ms)
        if new_mark is None:
            return
        write_state(self._path, pack(new_mark), fsync=self._fsync)
        self.mark_ms = new_mark
        self.writes += 1
