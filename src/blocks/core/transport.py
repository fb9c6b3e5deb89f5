"""The ``Transport`` protocol: request/reply and one-way messages between named nodes.

Theory of operation: a node is a name plus one ``Handler``. Another node reaches it with
``request`` (send one message, await one reply, bounded by a timeout) or ``send`` (one-way,
best effort, no reply). Messages are plain msgpack values (``None``, bools, ints, floats, str,
bytes, lists, dicts) and are encoded with ``blocks.core.codec`` on every hop, so the receiver
always gets its own copy and an unencodable value fails at the sender with
``InvalidArgument``.

Two implementations share this contract:

* ``blocks.core.memory_network.MemoryNetwork``: in-process, seeded faults (delay, loss,
  duplication, reordering, partitions, crashes), deterministic under the virtual-time loop in
  ``blocks.testing.simloop``.
* ``blocks.core.net.TcpTransport``: length-prefixed msgpack frames over asyncio
  streams between processes, pipelined on one connection per peer.

Errors, the same in both:

* ``Unavailable``: the destination is unknown, down, refused the connection, or the connection
  broke while the request was in flight (it may or may not have run).
* ``Timeout``: no reply before the deadline (it may or may not have run).
* A ``BlocksError`` raised by the remote handler is raised again at the caller with the same
  class (a block's own subclass arrives as its nearest class from ``blocks.core.errors``), the
  same message, and ``retry_after_ms`` for ``Overloaded``. Any other exception in the remote
  handler arrives as a plain ``BlocksError`` naming only its type.
* ``FailedPrecondition``: this transport was closed. ``InvalidArgument``: the message cannot
  be encoded or is too large, or ``timeout_s`` is not positive.

This module also holds what travels on the wire and is shared by both implementations: the
error encoding and the frame codec (a 4-byte big-endian length, then one msgpack value).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from blocks.core import errors
from blocks.core.codec import pack, unpack
from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, PeerError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "FRAME_BYTES_MAX",
    "FRAME_HEADER_BYTES",
    "FrameDecoder",
    "FrameKind",
    "Handler",
    "Transport",
    "check_timeout",
    "encode_frame",
    "encode_frame_parts",
    "error_from_wire",
    "error_to_wire",
]

Handler = Callable[[str, Any], Awaitable[Any]]
"""Called as ``handler(source_node_name, message)`` for every inbound request or one-way
message. Its return value is the reply to a request (ignored for one-way messages); a
``BlocksError`` it raises is sent back to the requester with its class.

Each inbound message runs in a task of its own, unless the handler was given with
``serve(handler, inline=True)``: ``TcpTransport`` then runs it inline, in the callback that
decoded the message, until it first suspends (a handler that answers without suspending
costs no task), and in a task from there on. Before that first suspension
``asyncio.current_task()`` is None, so ``asyncio.timeout`` and anything else bound to a task
raise ``RuntimeError``: only a handler written for it (a deadline there is a timer,
``loop.call_later``) may ask for ``inline``."""

DEFAULT_TIMEOUT_S = 5.0
"""Deadline of a request when the caller gives none."""

FRAME_HEADER_BYTES = 4
FRAME_BYTES_MAX = 16 * 1024 * 1024
"""Default bound on one frame's msgpack body (16 MiB); larger frames are a ``PeerError``."""


@runtime_checkable
class Transport(Protocol):
    """One node's endpoint on a network of named nodes."""

    @property
    def name(self) -> str:
        """This node's name, which peers pass as ``dest`` and handlers receive as source."""
        ...

    def serve(self, handler: Handler, *, inline: bool = False) -> None:
        """Route inbound messages to ``handler`` from now on (replacing any previous one).

        ``inline=True`` lets a transport run the handler inline up to its first suspension
        (see ``Handler``); a transport may ignore it.

        Until a handler is set, inbound requests are answered with ``Unavailable`` and one-way
        messages are dropped.
        """
        ...

    async def request(self, dest: str, message: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
        """Send ``message`` to ``dest`` and return the reply its handler produced.

        Raises ``Unavailable``, ``Timeout``, the remote handler's ``BlocksError``,
        ``FailedPrecondition`` after ``close()``, or ``InvalidArgument`` (see module docs).
        """
        ...

    async def send(self, dest: str, message: Any) -> None:
        """Send ``message`` one way; delivery is best effort and never confirmed.

        Raises only ``InvalidArgument`` for a message that cannot be encoded and
        ``FailedPrecondition`` after ``close()``; an unreachable ``dest`` drops the message.
        """
        ...

    async def close(self) -> None:
        """Stop serving and release resources; idempotent.

        Requests still waiting on this transport fail with ``Cancelled``; later calls raise
        ``FailedPrecondition``.
        """
        ...


def check_timeout(timeout_s: float) -> float:
    """Return ``timeout_s`` as a float if it is a finite positive number, else raise."""
    if not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise InvalidArgument(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
    return float(timeout_s)


# --- errors on the wire -------------------------------------------------------------------

_ERROR_CLASSES: dict[str, type[BlocksError]] = {
    name: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type) and issubclass(cls, BlocksError)
}
_ERROR_CLASSES["BlocksError"] = BlocksError


def _wire_class(error: BlocksError) -> type[BlocksError]:
    for cls in type(error).__mro__:
        if isinstance(cls, type) and _ERROR_CLASSES.get(cls.__name__) is cls:
            return cls
    raise AssertionError("BlocksError itself is always registered")


def error_to_wire(error: BaseException) -> dict[str, Any]:
    """Encode an exception raised by a handler as a msgpack-able dict."""
    if not isinstance(error, BlocksError):
        return {"type": "BlocksError", "message": f"remote handler failed: {type(error).__name__}"}
    wire: dict[str, Any] = {"type": _wire_class(error).__name__, "message": str(error)}
    if isinstance(error, Overloaded):
        wire["retry_after_ms"] = error.retry_after_ms
    return wire


def error_from_wire(wire: Any) -> BlocksError:
    """Rebuild the exception ``error_to_wire`` encoded; a malformed value is a ``PeerError``."""
    if not isinstance(wire, dict):
        return PeerError(f"malformed error from peer: {type(wire).__name__}")
    name, message = wire.get("type"), wire.get("message")
    if not isinstance(name, str) or not isinstance(message, str):
        return PeerError("malformed error from peer: missing type or message")
    cls = _ERROR_CLASSES.get(name, BlocksError)
    if issubclass(cls, Overloaded):
        retry_after_ms = wire.get("retry_after_ms", 0)
        if not isinstance(retry_after_ms, int) or retry_after_ms < 0:
            retry_after_ms = 0
        return cls(message, retry_after_ms=retry_after_ms)
    return cls(message)


# --- frames --------------------------------------------------------------------------------


class FrameKind(enum.IntEnum):
    """First element of every frame (a msgpack array) on a TCP connection.

    The dialing side sends ``HELLO`` first, then ``REQUEST``/``ONEWAY``; the listening side
    answers ``WELCOME`` (or ``GOAWAY`` and closes), then ``REPLY``/``FAILURE`` by request id.
    ``GOAWAY`` carries an encoded error and announces that the sender is closing.
    """

    HELLO = 1  # [HELLO, source_name, token | None]
    WELCOME = 2  # [WELCOME, server_name]
    REQUEST = 3  # [REQUEST, request_id, message]
    ONEWAY = 4  # [ONEWAY, message]
    REPLY = 5  # [REPLY, request_id, reply]
    FAILURE = 6  # [FAILURE, request_id, error]
    GOAWAY = 7  # [GOAWAY, error]


_FRAME_ARITY = {
    FrameKind.HELLO: 3,
    FrameKind.WELCOME: 2,
    FrameKind.REQUEST: 3,
    FrameKind.ONEWAY: 2,
    FrameKind.REPLY: 3,
    FrameKind.FAILURE: 3,
    FrameKind.GOAWAY: 2,
}


_JOIN_BYTES_MAX = 64 * 1024
"""A body up to this size is copied behind its header (one buffer is cheaper than two for the
socket write); a larger one travels as its own buffer, uncopied."""


def encode_frame(frame: list[Any], frame_bytes_max: int = FRAME_BYTES_MAX) -> bytes:
    """Length-prefix the msgpack encoding of ``frame``; ``InvalidArgument`` if it is too big."""
    body = pack(frame, size_max=frame_bytes_max)
    return len(body).to_bytes(FRAME_HEADER_BYTES, "big") + body


def encode_frame_parts(frame: list[Any], frame_bytes_max: int = FRAME_BYTES_MAX) -> list[bytes]:
    """``encode_frame`` as buffers for a gathered write: one (header and body) for a small
    frame, two (the header, then the body uncopied) for a large one."""
    body = pack(frame, size_max=frame_bytes_max)
    header = len(body).to_bytes(FRAME_HEADER_BYTES, "big")
    if len(body) <= _JOIN_BYTES_MAX:
        return [header + body]
    return [header, body]


class FrameDecoder:
    """Splits a byte stream into validated frames; pure, no I/O.

    ``feed`` returns every complete frame in the data so far and keeps the remainder
    (``append`` plus ``next_frame`` do the same one frame at a time, so a caller can act on
    the good frames that precede a bad one). A frame
    whose declared length is zero or above ``frame_bytes_max``, whose body is not msgpack, or
    that is not ``[known kind, ...]`` with the right number of fields raises ``PeerError``
    (one for a declared length past the limit carries ``details["breach"] ==
    "frame_too_large"``); after that the stream is unusable and the decoder refuses further
    input. ``frame_bytes_max`` may change between frames (a connection raises it once its
    handshake is done).
    """

    __slots__ = ("_broken", "_buffer", "_frame_bytes_max", "_start")

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX) -> None:
        if frame_bytes_max <= 0:
            raise InvalidArgument(f"frame_bytes_max must be > 0, got {frame_bytes_max}")
        self._frame_bytes_max = frame_bytes_max
        # The bytes before ``_start`` are decoded frames, dropped in one go once the whole
        # buffer is decoded or a frame is incomplete: not a shift of the rest per frame.
        self._buffer = bytearray()
        self._start = 0
        self._broken = False

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._start

    @property
    def frame_bytes_max(self) -> int:
        return self._frame_bytes_max

    @frame_bytes_max.setter
    def frame_bytes_max(self, value: int) -> None:
        if value <= 0:
            raise InvalidArgument(f"frame_bytes_max must be > 0, got {value}")
        self._frame_bytes_max = value

    def feed(self, data: bytes) -> list[list[Any]]:
        """Add ``data`` and return every complete frame; raises at the first bad one."""
        self.append(data)
        frames: list[list[Any]] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def append(self, data: bytes) -> None:
        """Add ``data`` to the buffer without decoding anything yet."""
        if self._broken:
            raise PeerError("stream already failed")
        self._buffer += data

    def next_frame(self) -> list[Any] | None:
        """Decode and remove the next complete frame, or return None if none is complete."""
        if self._broken:
            raise PeerError("stream already failed")
        buffer, start = self._buffer, self._start
        try:
            header_end = start + FRAME_HEADER_BYTES
            if len(buffer) < header_end:
                self._compact()
                return None
            length = int.from_bytes(buffer[start:header_end], "big")
            if length == 0 or length > self._frame_bytes_max:
                raise PeerError(
                    f"frame length {length} outside 1..{self._frame_bytes_max} bytes",
                    breach="frame_too_large" if length else "empty_frame",
                )
            end = header_end + length
            if len(buffer) < end:
                self._compact()
                return None
            with memoryview(buffer) as view, view[header_end:end] as body:
                frame = _parse_frame(body, self._frame_bytes_max)  # msgpack copies what it keeps
            if end == len(buffer):
                buffer.clear()
                self._start = 0
            else:
                self._start = end
            return frame
        except PeerError:
            self._broken = True
            self._buffer.clear()
            self._start = 0
            raise

    def _compact(self) -> None:
        if self._start:
            del self._buffer[: self._start]
            self._start = 0


_KINDS = {kind.value: kind for kind in FrameKind}


def _parse_frame(body: memoryview, frame_bytes_max: int) -> list[Any]:
    try:
        frame = unpack(body, size_max=frame_bytes_max)
    except InvalidArgument as error:
        raise PeerError(f"malformed frame: {error}") from None
    if not isinstance(frame, list) or not frame or type(frame[0]) is not int:
        raise PeerError("malformed frame: expected [kind, ...]")
    kind = _KINDS.get(frame[0])
    if kind is None:
        raise PeerError(f"unknown frame kind {frame[0]}")
    if len(frame) != _FRAME_ARITY[kind]:
        raise PeerError(f"{kind.name} frame has {len(frame)} fields")
    if (
        kind in (FrameKind.REQUEST, FrameKind.REPLY, FrameKind.FAILURE)
        and type(frame[1]) is not int
    ):
        raise PeerError(f"{kind.name} frame has a non-integer request id")
    frame[0] = kind
    return frame
