"""File handling for ``blocks.core.log``: the active segment's descriptor, writes and fsyncs.

Theory of operation
-------------------
``ActiveFile`` owns the one descriptor the log writes through. Frames go in with ``os.pwrite``
at the segment's end (no ``O_APPEND``: the log tracks the end itself, so a failed write can be
rolled back with ``ftruncate`` to exactly where it started). Data is made durable with
``os.fdatasync`` where the platform has it (it still flushes the file size, which is all an
append changes), else ``os.fsync``; directories with ``os.fsync``.

The fsync of the group commit runs in a worker thread while the event loop keeps appending,
so an ``ActiveFile`` has its own ``sync_lock``: an fsync and the closing of the descriptor
(on roll or close) never overlap, and an fsync asked of a file that has since been closed is
skipped, because the log fsyncs a segment before closing it under ``always`` and ``batch``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from blocks.core.errors import storage_error
from blocks.core.files import fsync_directory as _fsync_directory
from blocks.core.log.format import HEADER_BYTES
from blocks.core.log.segment import Segment, segment_file_name

__all__ = ["ActiveFile", "StorageCounters", "fsync_directory", "fsync_path"]


def _fsync_data(descriptor: int) -> None:
    # Looked up at each call so that tests can count or fail fsyncs by patching ``os``.
    getattr(os, "fdatasync", os.fsync)(descriptor)


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class StorageCounters:
    """Fsync counts since open; safe to bump from several threads."""

    __slots__ = ("_lock", "directory_fsyncs", "fsyncs")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.fsyncs = 0
        self.directory_fsyncs = 0

    def count_fsync(self) -> None:
        with self._lock:
            self.fsyncs += 1

    def count_directory_fsync(self) -> None:
        with self._lock:
            self.directory_fsyncs += 1


def fsync_directory(directory: str, counters: StorageCounters) -> None:
    """Make the creation or deletion of files in ``directory`` durable, and count it."""
    _fsync_directory(directory)
    counters.count_directory_fsync()


def fsync_path(path: str, counters: StorageCounters) -> None:
    """Fsync a closed segment file by path; a file deleted meanwhile needs nothing."""
    try:
        descriptor = os.open(path, os.O_RDONLY | _CLOEXEC)
    except FileNotFoundError:
        return
    try:
        _fsync_data(descriptor)
    finally:
        os.close(descriptor)
    counters.count_fsync()


class ActiveFile:
    """The segment being appended to and its read-write descriptor."""

    __slots__ = ("_counters", "_sync_lock", "closed", "descriptor", "segment")

    def __init__(self, segment: Segment, counters: StorageCounters) -> None:
        self.segment = segment
        self.descriptor = os.open(segment.path, os.O_RDWR | _CLOEXEC)
        self.closed = False
        self._counters = counters
        self._sync_lock = threading.Lock()

    @classmethod
    def create(
        cls, directory: str, base_offset: int, index_interval_bytes: int, counters: StorageCounters
    ) -> ActiveFile:
        """Create the empty segment file for ``base_offset`` (it must not exist) and open it."""
        path = os.path.join(directory, segment_file_name(base_offset))
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644))
        except OSError as error:
            raise storage_error(error, f"creating segment {path}") from error
        return cls(Segment.empty(path, base_offset, index_interval_bytes), counters)

    def write_frames(self, frames: list[bytes], fail: Callable[[OSError], None]) -> None:
        """Write ``frames`` (the next records, in order) in one ``pwrite`` at the end.

        On an ``OSError`` the file is cut back to where it was and ``Unavailable`` raised; if
        even that fails, ``fail`` marks the log unusable.
        """
        assert not self.closed
        data = b"".join(frames)
        start = self.segment.size
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self.descriptor, data[written:], start + written)
        except OSError as error:
            try:
                os.ftruncate(self.descriptor, start)
            except OSError as undo_error:
                fail(undo_error)
            raise storage_error(error, f"write to {self.segment.path}") from error
        position = start
        for frame in frames:
            self.segment.note_append(self.segment.next_offset, position, len(frame))
            position += len(frame)
        assert position == start + len(data) and len(frames[0]) >= HEADER_BYTES

    def fsync(self, fail: Callable[[OSError], None]) -> bool:
        """Fsync the data; False (and nothing done) if the file was closed meanwhile.

        A failed fsync calls ``fail`` (the page cache can no longer be trusted) and raises
        ``Unavailable``.
        """
        with self._sync_lock:
            if self.closed:
                return False
            try:
                _fsync_data(self.descriptor)
            except OSError as error:
                fail(error)
                raise storage_error(error, f"fsync of {self.segment.path}") from error
            self._counters.count_fsync()
            return True

    def close(self) -> None:
        """Close the descriptor, waiting for an fsync in progress. Idempotent."""
        with self._sync_lock:
            if not self.closed:
                self.closed = True
                os.close(self.descriptor)
