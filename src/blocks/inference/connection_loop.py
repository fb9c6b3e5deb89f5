"""One connection's request loop, shared by the inference server and the router.

Theory of operation: a ``connection.RequestReader`` reads the connection's requests ahead of
the handler (within the owner's ``ServerLimits``); ``serve_requests`` takes them in order and gives each to the owner's ``handle``
until the connection must end: the client left (end of stream), no whole request arrived
within ``idle_timeout_s``, reading failed (an ``HttpError``: framing is lost, so the error is
answered in OpenAI's shape and the connection closed), the handler asked to close, the
request did not keep its connection alive, or the owner stopped serving (a router draining).
Whatever ends it, the reader is stopped and the connection closed. An exception out of
``handle`` other than a dropped connection or cancellation is our bug: it is logged, never
let escape into the event loop.

What differs between the owners is given as ``ConnectionHooks``: the clock for the access
log, the counter of refusals by reason (the server's ``http_rejections``; the router counts
none), whether to go on taking requests, and the logger's name for a failed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from blocks.inference import openai_api as oa
from blocks.inference.connection import RequestReader, ServerLimits
from blocks.inference.http import Request, write_json

__all__ = ["ConnectionHooks", "Handler", "refuse_connection", "serve_requests"]

access_log = logging.getLogger("blocks.access")

Handler = Callable[[Request, RequestReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers one request (the connection's reader and writer given, for a handler that
streams or watches for the client leaving); False when the connection must close after it."""


def _count_nothing(reason: str) -> None:
    del reason


def _always() -> bool:
    return True


@dataclass(frozen=True, slots=True)
class ConnectionHooks:
    """What one server's connections differ in (see the module docstring).

    ``monotonic``: seconds, for the access log's durations. ``log``/``name``: where and
    under what name a failed connection is logged. ``count_rejection(reason)``: called with
    ``idle_timeout``, an ``HttpError``'s ``reason`` or ``internal_error``. ``serving()``:
    False once no further request should be taken."""

    monotonic: Callable[[], float]
    log: logging.Logger
    name: str
    count_rejection: Callable[[str], None] = _count_nothing
    serving: Callable[[], bool] = _always


async def refuse_connection(writer: asyncio.StreamWriter, body: dict[str, object]) -> None:
    """Answer a connection the owner will not serve with 503 and ``body``, and close it."""
    with contextlib.suppress(Exception):
        await write_json(writer, 503, body, keep_alive=False)
    writer.close()


async def serve_requests(
    connections: set[asyncio.Task[Any]],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handle: Handler,
    limits: ServerLimits,
    hooks: ConnectionHooks,
) -> None:
    """Answer the connection's requests in order with ``handle`` (False: close after this
    one) until the connection ends, reading them ahead with a ``RequestReader`` within
    ``limits``; then take the current task out of ``connections`` (the owner's open ones),
    stop the reader and close ``writer``."""
    requests = RequestReader(reader, limits.max_pipelined)
    task = asyncio.current_task()
    assert task is not None, "serve_requests runs in a connection's task"
    try:
        while hooks.serving():
            try:
                item = await requests.next(limits.idle_timeout_s)
            except TimeoutError:
                hooks.count_rejection("idle_timeout")
                break
            if item is None:
                break
            if not isinstance(item, Request):  # an HttpError: framing is lost, answer, close
                hooks.count_rejection(item.reason)
                await write_json(writer, item.status, oa.http_error_body(item), keep_alive=False)
                break
            started = hooks.monotonic()
            keep_open = await handle(item, requests, writer)
            if access_log.isEnabledFor(logging.INFO):  # blocks <block> serve --access-log
                elapsed_ms = (hooks.monotonic() - started) * 1000
                access_log.info("%s %s %.1fms", item.head.method, item.head.path, elapsed_ms)
            if not keep_open or not item.head.keep_alive:
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    except Exception:  # our bug: never let it escape into the event loop unlogged
        hooks.log.exception("%s connection failed", hooks.name)
        hooks.count_rejection("internal_error")
    finally:
        connections.discard(task)
        await requests.close()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
