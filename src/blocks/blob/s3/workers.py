"""The server's own bounded thread pools: uploads, requests and peers' shard calls apart.

Theory of operation. Store calls block (disk, fsync, peers), so the handler runs them in
worker threads, never in asyncio's default pool, which every library in the process shares
and which has only ``cpu_count + 4`` threads. A streamed upload holds its thread for as long
as its client takes to send the body, so uploads get a pool of their own with one thread per
allowed upload (``uploads_max``): a new upload past it is refused at once (``SlowDown``,
counted), never queued, and reads, listings and small writes, on the ``requests`` pool,
never wait behind a stalled upload. Peers' shard requests have a third pool: a node's
uploads wait on its peers' shard writes, so sharing one pool between the two across nodes
could deadlock until a timeout.

A call that is short and touches only the local disk may run on the event loop instead
(``run_inline``), when the caller knows nothing else is in flight (``idle``, and for the
S3 handler a single client connection): a small durable PUT then skips the thread trip
(two thread wake-ups and two GIL hand-offs, 30-70 us of CPU on two busy cores) and blocks
the loop only for its own fsync, which nobody else is waiting on. Under concurrency the
pool stays in use, so concurrent PUTs keep sharing fsyncs.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from blocks.core.errors import InvalidArgument

__all__ = ["REQUEST_THREADS", "SHARD_THREADS", "UPLOADS_MAX", "Workers"]

T = TypeVar("T")

UPLOADS_MAX = 32
"""Streamed uploads (PutObject and UploadPart bodies of 1 MiB or more) in flight at once."""
REQUEST_THREADS = 16
"""Threads for every other store call (reads, listings, metadata, small writes)."""
SHARD_THREADS = 8
"""Threads serving peers' shard requests."""


class Workers:
    """The three pools and the upload slots; one per server, closed with it."""

    def __init__(
        self,
        uploads_max: int = UPLOADS_MAX,
        request_threads: int = REQUEST_THREADS,
        shard_threads: int = SHARD_THREADS,
    ) -> None:
        if min(uploads_max, request_threads, shard_threads) < 1:
            raise InvalidArgument("every pool needs at least one thread")
        self.uploads_max = uploads_max
        self.requests = ThreadPoolExecutor(request_threads, thread_name_prefix="blob-request")
        self._uploads = ThreadPoolExecutor(uploads_max, thread_name_prefix="blob-upload")
        self._shards = ThreadPoolExecutor(shard_threads, thread_name_prefix="blob-shard")
        self.uploads_in_flight = 0
        """Upload slots taken (event-loop state: touched only from the loop)."""
        self.requests_in_flight = 0
        """Calls on the requests pool not yet returned (event-loop state)."""
        self.uploads_refused = 0

    def try_take_upload(self) -> bool:
        """Take an upload slot if one is free (call from the event loop); False, counted,
        when all ``uploads_max`` are taken."""
        if self.uploads_in_flight >= self.uploads_max:
            self.uploads_refused += 1
            return False
        self.uploads_in_flight += 1
        return True

    def release_upload(self) -> None:
        assert self.uploads_in_flight > 0, "releasing an upload slot nobody took"
        self.uploads_in_flight -= 1

    def idle(self) -> bool:
        """No call on the requests pool and no upload in flight (call from the loop)."""
        return self.requests_in_flight == 0 and self.uploads_in_flight == 0

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the requests pool."""
        loop = asyncio.get_running_loop()
        self.requests_in_flight += 1
        try:
            return await loop.run_in_executor(self.requests, functools.partial(function, *args))
        finally:
            self.requests_in_flight -= 1

    async def run_inline(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` right here, on the event loop, blocking it until it returns:
        only for a short call on local state when ``idle`` (see the module docstring)."""
        return function(*args)

    async def run_upload(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the uploads pool (the caller holds an upload slot)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._uploads, functools.partial(function, *args))

    async def run_shard(self, function: Callable[..., T], *args: object) -> T:
        """``function(*args)`` on the shard pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._shards, functools.partial(function, *args))

    def close(self) -> None:
        """Stop taking work; threads finish what they hold (they are not waited for)."""
        for pool in (self.requests, self._uploads, self._shards):
            pool.shutdown(wait=False, cancel_futures=True)
