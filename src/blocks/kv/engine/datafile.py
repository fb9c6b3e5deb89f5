"""One open data file of a Bitcask store and its read path: a memory map, or ``pread``.

Theory of operation: a ``get`` reads one whole record (header, key, value) at a known offset.
With ``pread`` that is a system call per read; with a memory map it is a slice of the page
cache, no system call at all. A file's records only ever grow (the store appends; recovery
and the undo of a failed append cut a file back before any byte past the cut was mapped, and
sealing cuts only the zero-filled tail past ``size``, which no map covers), so a map of the
first ``mapped`` bytes stays valid for the life of the file:

* a sealed file (merge output, a file found on open, a rotated-away active file) is mapped
  once, whole, on its first read;
* the active file grows under the map: a read inside the mapped prefix slices the map, a read
  past it uses ``pread``, and the map is remade over the whole file once the unmapped tail is
  worth it (at least ``REMAP_BYTES_MIN`` and a quarter of what is mapped, so a file is
  remapped O(log size) times while small and every few MiB of writes once large).

The caller (the store) serialises ``read``, ``grew`` and ``close`` under its lock, and slices
are copies, so closing a map never races a reader holding a view into it.

A memory-mapped read has one different failure: a disk that cannot deliver a page (a media
error) raises ``SIGBUS`` in the reading thread, which ends the process, where ``pread``
raises ``EIO`` (then ``StorageError``). ``Bitcask.open(..., mmap_reads=False)`` keeps
``pread`` for those who prefer the error to the speed.
"""

from __future__ import annotations

import mmap
import os

from blocks.core.errors import storage_error
from blocks.kv.engine.files import FileId

__all__ = ["REMAP_BYTES_MIN", "DataFile"]

REMAP_BYTES_MIN = 64 * 1024
"""Smallest unmapped tail worth a new map of the active file (below it, ``pread``)."""


class DataFile:
    """An open data file; ``file_no`` is its index in the store's table, never reused."""

    __slots__ = (
        "_map",
        "_mapped",
        "_mmap_reads",
        "allocated",
        "fd",
        "file_id",
        "file_no",
        "growing",
        "size",
    )

    def __init__(
        self, file_id: FileId, file_no: int, fd: int, size: int, *, mmap_reads: bool = True
    ) -> None:
        self.file_id = file_id
        self.file_no = file_no
        self.fd = fd
        self.size = size  # bytes of records: the logical end of the file
        self.allocated = size  # the file's length: size plus a zero-filled preallocated tail
        self._mmap_reads = mmap_reads
        self.growing = False  # the active file: appended to, remapped as it grows
        self._map: mmap.mmap | None = None
        self._mapped = 0

    def read(self, offset: int, size: int) -> bytes:
        """The ``size`` bytes at ``offset`` (a copy); store lock held."""
        end = offset + size
        if end <= self._mapped:
            assert self._map is not None
            return self._map[offset:end]
        tail = self.size - self._mapped
        if (
            self._mmap_reads
            and tail > 0
            and (not self.growing or tail >= max(REMAP_BYTES_MIN, self._mapped >> 2))
        ):
            self._remap()
            if end <= self._mapped:
                assert self._map is not None
                return self._map[offset:end]
        try:
            return os.pread(self.fd, size, offset)
        except OSError as error:
            raise storage_error(error, "read") from None

    def _remap(self) -> None:
        try:
            new_map = mmap.mmap(self.fd, self.size, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # out of maps or address space: stay on pread
            self._mmap_reads = False
            return
        self._unmap()
        self._map = new_map
        self._mapped = self.size

    def _unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        self._mapped = 0

    def close(self) -> None:
        self._unmap()
        os.close(self.fd)
