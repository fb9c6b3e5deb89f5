"""NATS calls as blocks errors: the connection and error mapping every NATS adapter shares.

Theory of operation
-------------------
``connect_nats(url)`` opens a nats-py connection that keeps reconnecting forever (an adapter
reports ``Unavailable`` while the server is down, and works again when it is back).
``nats_call(client, awaitable, what)`` awaits one nats-py call and turns what it raises into
the block's own errors, so nats-py's exceptions never reach a caller:

* not connected, connection lost, no responders: ``Unavailable`` (retry later);
* no answer in time: ``Timeout`` (it may have taken effect);
* a compare-and-set that lost (wrong last sequence): ``Conflict``;
* a missing stream, message or key: ``NotFound``;
* a request JetStream refused: ``FailedPrecondition``.

This module imports nats-py: only the NATS adapters import it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from blocks.core.errors import Conflict, FailedPrecondition, NotFound, Timeout, Unavailable

__all__ = ["CONNECT_TIMEOUT_S", "connect_nats", "nats_call"]

CONNECT_TIMEOUT_S = 5.0
RECONNECT_WAIT_S = 0.2

T = TypeVar("T")


async def connect_nats(url: str, **options: Any) -> Client:
    """A nats-py connection that keeps reconnecting (the adapter reports ``Unavailable``
    while it is down)."""
    try:
        return await nats.connect(
            url,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            connect_timeout=CONNECT_TIMEOUT_S,
            **options,
        )
    except (nats.errors.Error, OSError) as error:
        raise Unavailable(f"cannot connect to {url}: {error}") from error


async def nats_call(client: Client, awaitable: Awaitable[T], what: str) -> T:
    """Await a nats call, turning its exceptions into the block's own errors."""
    if not client.is_connected:
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise Unavailable(f"{what}: not connected to NATS")
    try:
        return await awaitable
    except (TimeoutError, nats.errors.TimeoutError) as error:
        raise Timeout(f"{what}: NATS did not answer in time") from error
    except nats.js.errors.KeyWrongLastSequenceError as error:
        raise Conflict(f"{what}: changed meanwhile") from error
    except nats.js.errors.NotFoundError as error:  # streams, messages, keys
        raise NotFound(f"{what}: not found") from error
    except nats.js.errors.BadRequestError as error:
        raise FailedPrecondition(f"{what}: refused by JetStream: {error}") from error
    except (nats.errors.Error, OSError) as error:  # connection lost, no responders, ...
        raise Unavailable(f"{what}: {error}") from error
