"""Inline objects' bytes kept in memory, and the GET that needs no thread trip.

Theory of operation. An inline object (at most ``inline_bytes_max``) is one journal record
holding its manifest and its bytes (``store``'s module docstring). Reading it back means a
read of that record; ``InlineCacheMixin`` keeps the bytes of recently written or read
inline objects by the record's journal offset (``INLINE_CACHE_BYTES`` in all, least
recently used dropped first, no one object over a 64th of it), so a repeated GET reads no
file. ``read_cached`` answers a GET from memory when it can do so without waiting (the
store's lock free, the bytes kept): the event loop asks it first, and a small object's GET
makes no worker-thread trip. Everything here runs under the store's lock; compaction moves
the records, so it drops every kept body (``_forget_inline``), and an overwrite or delete
drops the body it replaced (``_forget_one``). Damage to a kept object's record is found by
scrub (``_scrub_inline`` reads every record: the log checks it), not by a GET.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from blocks.blob.api import ObjectInfo
from blocks.blob.listing import resolve_range
from blocks.blob.storage.store_parts import StoreParts
from blocks.core.errors import Corruption, NotFound

__all__ = ["INLINE_CACHE_BYTES", "InlineCacheMixin"]

INLINE_CACHE_BYTES = 32 * 1024 * 1024
"""Inline objects' bytes kept in memory (least recently used dropped first), so that a GET
of a small object can be answered by the event loop without a thread trip or a file read
(``read_cached``)."""


class InlineCacheMixin(StoreParts):
    """The kept bytes of inline objects (see the module docstring)."""

    def _init_inline_cache(self) -> None:
        self._inline_cache: OrderedDict[int, bytes] = OrderedDict()
        """Journal offset of an inline object's record -> its bytes (lock held; emptied
        when compaction moves the records)."""
        self._inline_cache_bytes = 0
        """The sum of the kept bodies' lengths, at most ``INLINE_CACHE_BYTES``."""

    def read_cached(
        self,
        bucket: str,
        key: str,
        byte_range: tuple[int, int] | None = None,
        version_id: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> tuple[ObjectInfo, bytes] | None:
        """``iter_object``'s answer, whole, if it needs no wait: the store's lock is free
        and the object is inline with its bytes in memory, or the answer is an error (no
        such key or bucket). ``None`` otherwise, having done nothing (the caller asks
        ``iter_object`` in a worker thread). The event loop asks this first for a GET, so a
        small object's GET makes no thread trip. ``check`` (an access check) runs first
        whenever this answers, under the lock, and its error wins."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            try:
                manifest = self._manifest(bucket, key, version_id)
                body = self._inline_cache.get(manifest.inline_offset) if manifest.inline else None
                if body is None:
                    return None
                start, stop = resolve_range(byte_range, manifest.size)
            except NotFound:  # an answer too: checked first, as the thread's is
                if check is not None:
                    check()
                raise
            except Exception:  # bad names, versions or ranges: the thread answers those
                return None
            if check is not None:
                check()
            self._inline_cache.move_to_end(manifest.inline_offset)
            return self._info(manifest), body[start:stop]
        finally:
            self._lock.release()

    def _inline_bytes(self, offset: int) -> bytes:
        """An inline object's bytes, from memory or read from its record (lock held)."""
        body = self._inline_cache.get(offset)
        if body is None:
            body = bytes(self._read_inline(offset))
            self._cache_inline(offset, body)
        else:
            self._inline_cache.move_to_end(offset)
        return body

    def _cache_inline(self, offset: int, body: bytes) -> None:
        """Keep an inline object's bytes (lock held), dropping the least recently used."""
        if len(body) > INLINE_CACHE_BYTES // 64 or offset in self._inline_cache:
            return
        self._inline_cache[offset] = body
        self._inline_cache_bytes += len(body)
        while self._inline_cache_bytes > INLINE_CACHE_BYTES:
            _, dropped = self._inline_cache.popitem(last=False)
            self._inline_cache_bytes -= len(dropped)

    def _forget_one(self, offset: int) -> None:
        """Drop one kept inline object (lock held), if it is kept."""
        body = self._inline_cache.pop(offset, None)
        if body is not None:
            self._inline_cache_bytes -= len(body)

    def _forget_inline(self) -> None:
        """Drop every cached inline object (lock held): their records moved."""
        self._inline_cache.clear()
        self._inline_cache_bytes = 0

    def _scrub_inline(self) -> tuple[int, int]:
        """Read every inline object's record (the log checks it); (checked, lost)."""
        checked = lost = 0
        with self._lock:
            inline = [m for i in self.index.objects.values() for m in i.values() if m.inline]
        for manifest in inline:
            with self._lock:
                current = self.index.objects.get(manifest.bucket, {}).get(manifest.key)
                if current is None or not current.inline:
                    continue
                checked += 1
                try:
                    self._read_inline(current.inline_offset)
                except Corruption:
                    lost += 1
        return checked, lost
