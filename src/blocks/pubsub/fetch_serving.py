"""How a partition leader answers its followers' fetches cheaply: held fetches, the kept batch.

Theory of operation. A follower's fetch that finds nothing new is *held* by the driver for
up to ``fetch_wait_ms`` so records flow out as soon as they are written. A hold is a plain
future and a timer (``FetchServing.hold``), not a task; ``wake`` settles every held fetch of a
partition, when records arrive or the high watermark moves, and the fetch is decided again.

A leader's newest batch is kept in the form fetch answers carry it (``keep_batch``: its
epoch, first offset and wire rows), so the followers' fetches of what was just written are
answered from it (``rows``) rather than read back from the log; the kept batch answers only
when it is exactly what the log holds from the fetch offset (same epoch, ending at the log's
end), and anything else is read from the store. Bounds: an answer holds at most
``FETCH_RECORDS_MAX`` records or ``FETCH_BYTES_MAX`` bytes; a batch larger than one answer
(or half its bytes) is not kept.

One asyncio loop; no I/O but the store reads of ``rows``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from blocks.pubsub.record import StoredRecord, record_to_wire
from blocks.pubsub.topics import TopicTable

__all__ = ["FETCH_BYTES_MAX", "FETCH_RECORDS_MAX", "FetchServing"]

FETCH_RECORDS_MAX = 2_000
FETCH_BYTES_MAX = 4 << 20
Key = tuple[str, int]


class FetchServing:
    """The held fetches and kept batches of every partition a broker holds."""

    __slots__ = ("_batches", "_held")

    def __init__(self) -> None:
        self._held: dict[Key, list[asyncio.Future[None]]] = {}  # held fetches, woken on news
        # The leader's newest batch: (epoch, first offset, rows).
        self._batches: dict[Key, tuple[int, int, list[Any]]] = {}

    def open(self, key: Key) -> None:
        """Start serving fetches of partition ``key`` (no hold, no kept batch)."""
        self._held[key] = []

    def wake(self, key: Key) -> None:
        """Release every fetch of ``key`` held now, to be decided again."""
        held, self._held[key] = self._held[key], []
        for waiter in held:
            if not waiter.done():
                waiter.set_result(None)

    async def hold(self, key: Key, timeout_s: float) -> None:
        """Wait until ``wake(key)`` or ``timeout_s`` (a future and a timer: no task)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held[key].append(waiter)
        timer = asyncio.get_running_loop().call_later(timeout_s, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._held[key].remove(waiter)

    def keep_batch(self, key: Key, epoch: int | None, records: list[StoredRecord]) -> None:
        """Keep a leader's batch (``epoch`` not None) in its fetch answers' form, if one answer
        would carry it whole; drop the kept one otherwise."""
        size = sum(len(r.value) + len(r.key or b"") for r in records)
        if epoch is None or len(records) > FETCH_RECORDS_MAX or size > FETCH_BYTES_MAX // 2:
            self._batches.pop(key, None)
            return
        self._batches[key] = (epoch, records[0].offset, [record_to_wire(r) for r in records])

    def rows(
        self, key: Key, topics: TopicTable, epoch: int, log_end: int, offset: int
    ) -> list[Any]:
        """A fetch answer's records from ``offset`` for a leader in ``epoch`` whose log ends at
        ``log_end``: the kept batch when it is exactly what the log holds from there, else
        read from the partition's store in ``topics``."""
        if offset >= log_end:
            return []  # a hold that ended with nothing new
        kept = self._batches.get(key)
        if kept is not None:
            kept_epoch, first, rows = kept
            if kept_epoch == epoch and first == offset and first + len(rows) == log_end:
                return rows
        store = topics.store(*key)
        found = store.read(offset, FETCH_RECORDS_MAX, FETCH_BYTES_MAX, include_control=True)
        return [record_to_wire(r) for r in found if r.offset < log_end]


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
