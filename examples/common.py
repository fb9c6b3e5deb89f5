"""What the three designs share: starting servers, stopping them, narrating a session.

Theory of operation. A design starts several block servers in one process, each on
127.0.0.1 with a port the OS picks. ``Services`` remembers, for each thing started, how to
stop it; ``aclose()`` stops them newest first, each within ``STOP_TIMEOUT_S``, and keeps
going when one fails, so a session that crashes half way still leaves no server behind. A
narrator (``Say``) is where a session prints; tests pass one that records the lines.

``put_merging`` is how every design writes a record back after a read: blocks' kv keeps a
write that raced another as a sibling (merged by the next reader), a compare-and-set store
(Redis) refuses it with ``Conflict``; then the writer reads again, merges what it meant to
write into what is there, and tries again, so both stores end with the same merged record.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Protocol, TypeVar

from blocks.cli_errors import describe
from blocks.core.errors import BlocksError, Conflict, InvalidArgument
from examples.ports import VersionedRead, VersionedStore

__all__ = [
    "STOP_TIMEOUT_S",
    "WRITE_ATTEMPTS_MAX",
    "BlockingCalls",
    "Say",
    "Services",
    "Startable",
    "put_merging",
    "run_command",
    "wait_for_condition",
]

STOP_TIMEOUT_S = 5.0
"""The longest one server may take to stop before it is abandoned (and logged)."""
STOPPERS_MAX = 64
THREADS_MAX = 32
"""Things one ``Services`` may hold; a design that needs more is doing something wrong."""

WRITE_ATTEMPTS_MAX = 8
"""Writes one ``put_merging`` tries before its ``Conflict`` reaches the caller."""

Say = Callable[[str], None]
T = TypeVar("T")
log = logging.getLogger(__name__)


class Startable(Protocol):
    """A block's gRPC ``Server``: started, then stopped with a grace period."""

    @property
    def address(self) -> str: ...

    async def start(self) -> int: ...

    async def stop(self, grace_s: float = ...) -> None: ...


class Services:
    """``async with Services() as services: address = await services.start(server)``."""

    def __init__(self) -> None:
        self._stoppers: list[tuple[str, Callable[[], Awaitable[object]]]] = []

    def defer(self, name: str, stop: Callable[[], Awaitable[object]]) -> None:
        """Run ``stop()`` when the services close (newest first)."""
        if len(self._stoppers) >= STOPPERS_MAX:
            raise RuntimeError(f"at most {STOPPERS_MAX} things to stop")
        self._stoppers.append((name, stop))

    async def start(self, server: Startable, name: str = "server") -> str:
        """Start a block's ``Server`` and stop it on close; returns its address."""
        await server.start()
        self.defer(name, lambda: server.stop(grace_s=0.5))
        return server.address

    async def aclose(self) -> None:
        while self._stoppers:
            name, stop = self._stoppers.pop()
            try:
                await asyncio.wait_for(stop(), STOP_TIMEOUT_S)
            except Exception as error:  # keep stopping the rest; the failure is logged
                log.warning("stopping %s failed: %r", name, error)

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class BlockingCalls:
    """A small thread pool of its own for blocking clients (S3 over ``http.client``, sync
    gRPC stubs).

    The servers in this process use the event loop's default executor for their own blocking
    work; if clients filled it with calls waiting on those servers, both would wait forever.
    ``threads`` bounds how many blocking calls run at once; more wait their turn.
    """

    def __init__(self, threads: int, name: str) -> None:
        if not 1 <= threads <= THREADS_MAX:
            raise InvalidArgument(f"threads must be in [1, {THREADS_MAX}]")
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)

    async def run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


async def wait_for_condition(
    check: Callable[[], Awaitable[bool]], *, timeout_s: float, interval_s: float = 0.02
) -> bool:
    """Poll ``check`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(BlocksError):  # not ready yet counts as "not yet"
            if await check():
                return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval_s)


async def put_merging(
    store: VersionedStore,
    key: str,
    value: bytes,
    context: bytes | None,
    remerge: Callable[[VersionedRead], bytes],
) -> int:
    """Write ``value`` with the ``context`` of a read; on ``Conflict`` read again and write
    ``remerge(new read)`` with its context, at most ``WRITE_ATTEMPTS_MAX`` writes in all.

    Returns how many writes were refused (always 0 on a store that keeps siblings).
    ``remerge`` must fold what the caller meant to write into every sibling of the read.
    """
    conflicts = 0
    while True:
        try:
            await store.put(key, value, context)
            return conflicts
        except Conflict:
            conflicts += 1
            if conflicts >= WRITE_ATTEMPTS_MAX:
                raise
        read = await store.get(key)
        value, context = remerge(read), read.context


class Reported(Protocol):
    def summary(self) -> dict[str, object]: ...


def run_command(session: Coroutine[Any, Any, Reported], args: argparse.Namespace) -> int:
    """Run a design's session for its ``__main__``; with ``args.json`` print its summary as
    JSON on stdout. A library or OS error (an engine missing, a port taken) is one line on
    stderr and ``blocks``' documented exit code for it (``blocks.cli_errors``)."""
    try:
        report = asyncio.run(session)
    except (BlocksError, OSError) as error:
        message, code = describe(error, args)
        print(message, file=sys.stderr, flush=True)
        return code
    if args.json:
        print(json.dumps(report.summary(), default=str))
    return 0
