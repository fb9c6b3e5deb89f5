"""Reading a large piece of a request body straight into its own buffer.

Theory of operation. asyncio's ``StreamReader`` copies every received byte three times on
the way to a caller of ``readexactly``: the transport's ``bytes`` of each read, the reader's
``bytearray`` (``extend``), then a slice of it and ``bytes`` of that slice. For a streamed
PUT those copies were about an eighth of the server's CPU (``perf`` and py-spy, docs/blob.md,
fifth round). ``read_exactly_direct`` does the same read with one copy: it takes what the
reader already holds, then lends the connection to a ``BufferedProtocol`` (``_Receiver``)
whose buffer *is* the rest of the piece, so the transport receives into it directly, and
gives the connection back to the reader's own protocol the moment the piece is full (the
receiver never offers more room than the piece has left, so not one byte of the next
request can land in it). The one copy left is ``bytes`` of the filled buffer: callers (the
store) keep pieces and rely on them being immutable.

A peer that closes or resets the connection mid-piece fails the read with
``IncompleteReadError`` and the reader's protocol hears of it as it would have; a cancelled
read (a timeout) gives the connection back before the cancellation goes on. TLS connections
and readers whose internals differ from CPython's (checked, not assumed) use ``readexactly``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["DIRECT_READ_BYTES_MIN", "read_exactly_direct"]

DIRECT_READ_BYTES_MIN = 256 * 1024
"""Smaller reads go through ``readexactly``: lending the connection costs two protocol
switches, more than copying a small piece."""


class _Receiver(asyncio.BufferedProtocol):
    """Stands in for the connection's protocol until ``view`` is full."""

    def __init__(
        self,
        transport: Any,
        original: Any,
        view: memoryview,
        filled: int,
        done: asyncio.Future[None],
    ) -> None:
        self._transport = transport
        self._original = original
        self._view = view
        self._filled = filled
        self._done = done

    def give_back(self) -> None:
        """Return the connection to the reader's protocol (idempotent)."""
        if self._transport.get_protocol() is self and not self._transport.is_closing():
            self._transport.set_protocol(self._original)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled == len(self._view):
            self.give_back()  # the next byte belongs to the reader again
            if not self._done.done():
                self._done.set_result(None)

    def _fail(self) -> None:
        if not self._done.done():
            partial = bytes(self._view[: self._filled])
            self._done.set_exception(asyncio.IncompleteReadError(partial, len(self._view)))

    def eof_received(self) -> bool | None:
        self._fail()
        self.give_back()
        result: bool | None = self._original.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()
        self._original.connection_lost(exc)

    def pause_writing(self) -> None:
        self._original.pause_writing()

    def resume_writing(self) -> None:
        self._original.resume_writing()


def _internals(reader: asyncio.StreamReader) -> tuple[bytearray, Any] | None:
    """The reader's buffer and plain (not TLS) transport, if they are what we expect."""
    buffer = getattr(reader, "_buffer", None)
    transport = getattr(reader, "_transport", None)
    if not isinstance(buffer, bytearray) or transport is None:
        return None
    if not hasattr(transport, "set_protocol") or transport.get_extra_info("sslcontext"):
        return None
    if not hasattr(reader, "_maybe_resume_transport") or reader.exception() is not None:
        return None
    return buffer, transport


async def read_exactly_direct(reader: asyncio.StreamReader, size: int) -> bytes:
    """``reader.readexactly(size)``, receiving the bytes not yet buffered straight into the
    result's buffer when ``size`` is large (see the module docstring). Raises
    ``IncompleteReadError`` if the connection ends first."""
    internals = _internals(reader) if size >= DIRECT_READ_BYTES_MIN else None
    if internals is None or reader.at_eof():
        return await reader.readexactly(size)
    held, transport = internals
    piece = bytearray(size)
    view = memoryview(piece)
    filled = min(len(held), size)
    with memoryview(held) as source:
        view[:filled] = source[:filled]
    del held[:filled]
    reader._maybe_resume_transport()  # type: ignore[attr-defined]  # as readexactly does
    if filled < size:
        if reader.at_eof():  # the peer is gone: only what was buffered will ever come
            raise asyncio.IncompleteReadError(bytes(view[:filled]), size)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        receiver = _Receiver(transport, transport.get_protocol(), view, filled, done)
        transport.set_protocol(receiver)
        try:
            await done
        finally:
            receiver.give_back()
    view.release()
    return bytes(piece)
