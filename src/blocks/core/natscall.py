"""NATS calls as blocks errors: the connection and error mapping every NATS adapter shares.

Theory of operation
-------------------
``connect_nats(url)`` opens a nats-py connection that keeps reconnecting forever (an adapter
reports ``Unavailable`` while the server is down, and works again when it is back).
``nats_call(client, awaitable, what)`` awaits one nats-py call and turns what it raises into
the block's own errors, so nats-py's exceptions never reach a caller (``NatsAdapter._call``
does it for an adapter's own connection):

* not connected, connection lost, no responders: ``Unavailable`` (retry later);
* no answer in time: ``Timeout`` (it may have taken effect);
* a compare-and-set that lost (wrong last sequence): ``Conflict``;
* a missing stream, message or key: ``NotFound``;
* a request JetStream refused: ``FailedPrecondition``.

``NatsAdapter`` is what every JetStream adapter holds the same way: the connection (opened
by ``open(url)`` and then closed by the adapter's ``close``, or handed in and left open), its
JetStream context, a namespace prefixed to every stream, subject and bucket name, and the
injected clock.

This module imports nats-py: only the NATS adapters import it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Any, Self, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Timeout,
    Unavailable,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "REQUEST_TIMEOUT_S",
    "NatsAdapter",
    "check_nats_name",
    "connect_nats",
    "nats_call",
]

REQUEST_TIMEOUT_S = 5.0  # a JetStream API request without an answer by then is a Timeout
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_nats_name(value: object, what: str) -> str:
    """``value`` if it can name a stream, subject token or bucket (1..64 of A-Z a-z 0-9 _ -,
    the characters every NATS name takes); ``InvalidArgument`` naming ``what`` otherwise."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidArgument(f"{what} must be 1..64 characters of A-Z a-z 0-9 _ -")
    return value


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


class NatsAdapter:
    """The connection side of a JetStream adapter (see the module docs). A subclass calls
    ``super().__init__`` first and awaits ``_close_connection`` last in its ``close``."""

    def __init__(
        self,
        client: Client,
        *,
        namespace: str = "",
        clock: Clock | None = None,
        owns_client: bool = True,
    ) -> None:
        if namespace:
            check_nats_name(namespace, "a namespace")
        self._nc = client
        self._js: JetStreamContext = client.jetstream(timeout=REQUEST_TIMEOUT_S)
        self._namespace = namespace
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._owns_client = owns_client

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Self:
        """Connect to ``url`` and return an adapter that closes the connection on ``close``."""
        return cls(await connect_nats(url), **kwargs)

    @property
    def connected(self) -> bool:
        """Whether the connection to NATS is up now (calls raise ``Unavailable`` when not)."""
        return bool(self._nc.is_connected)

    async def _call(self, awaitable: Awaitable[T], what: str) -> T:
        """``nats_call`` on this adapter's connection."""
        return await nats_call(self._nc, awaitable, what)

    async def _close_connection(self) -> None:
        """Close the connection if this adapter opened it (and it is not closed already)."""
        if self._owns_client and not self._nc.is_closed:
            await self._nc.close()
