"""One HTTP connection's requests, read ahead of the handler: keep-alive and pipelining.

Theory of operation: the server needs to know, while a request generates, whether its
client is still there, and it must do so without taking bytes that belong to the next
request (a watcher that read one byte lost the ``P`` of the next ``POST`` on every reused
connection). So one task per connection, ``RequestReader``, is the only reader of the
socket: it parses whole requests and queues them (at most ``max_pipelined`` ahead of the
handler), and when the peer's end of the stream arrives between requests it sets ``gone``.
The handler takes requests in order with ``next``, answers each, and watches ``gone`` while
it generates; pipelined requests are therefore answered one after another, in order.

End-of-stream means the client left: a client that half-closes its side after sending a
request (which no HTTP client library does) has its generations cancelled. While the queue is
full the reader stops reading, so TCP pushes back on a client pipelining faster than it is
answered; its disconnect is then noticed once the handler catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from blocks.core.errors import InvalidArgument
from blocks.inference.http import HttpError, Request, read_request

__all__ = ["RequestReader", "ServerLimits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Bounds on what one client can make the server hold.

    ``max_connections``: open connections; one more is answered 503 and closed.
    ``max_pipelined``: requests read ahead of the one being answered, per connection.
    ``idle_timeout_s``: how long a connection may sit without a complete next request
    (this also bounds a client that sends a head or body slowly).
    """

    max_connections: int = 1024
    max_pipelined: int = 8
    idle_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_pipelined < 1 or not self.idle_timeout_s > 0:
            raise InvalidArgument("server limits must be positive")


class RequestReader:
    """Reads and queues one connection's requests; see the module docstring."""

    def __init__(self, reader: asyncio.StreamReader, max_pipelined: int) -> None:
        self.gone = asyncio.Event()  # the peer closed its end (or the connection broke)
        # Items: a request, the HttpError that ended reading, or None for end-of-stream.
        self._queue: asyncio.Queue[Request | HttpError | None] = asyncio.Queue(max_pipelined)
        self._reader = reader
        self._task = asyncio.create_task(self._read_all(), name="http-request-reader")

    async def next(self, timeout_s: float) -> Request | HttpError | None:
        """The next request in arrival order; None at end-of-stream.

        Raises ``TimeoutError`` when no whole request arrives within ``timeout_s``.
        """
        return await asyncio.wait_for(self._queue.get(), timeout_s)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read_all(self) -> None:
        try:
            while True:
                try:
                    request = await read_request(self._reader)
                except HttpError as error:  # framing is lost: nothing after it can be read
                    await self._queue.put(error)
                    return
                if request is None:
                    break
                await self._queue.put(request)
        except ConnectionError:
            pass
        except Exception:  # our bug: end the connection rather than leave the handler waiting
            log.exception("reading HTTP requests failed")
        self.gone.set()
        await self._queue.put(None)
