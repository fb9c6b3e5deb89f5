"""The two ends of one ``TcpTransport`` connection, as asyncio protocols.

Theory of operation: a connection carries length-prefixed msgpack frames
(``blocks.core.transport.FrameKind``) and has a direction of purpose. ``ClientConnection`` is
the dialing end: it sends ``HELLO`` (its node name and optional bearer token) as soon as the
socket is up (after the TLS handshake when there is one), waits for ``WELCOME`` naming the
node it meant to reach, then pipelines ``REQUEST`` and ``ONEWAY`` frames and matches each
``REPLY`` or ``FAILURE`` to its waiting caller by request id; one timer per connection, armed
for the earliest deadline, sweeps out the requests past theirs. A greeting answered with a TLS
record means a plaintext dialer reached a TLS listener: it fails with ``Unavailable`` saying
so. ``ServerConnection`` is the listening end: it requires a ``HELLO`` within the handshake
timeout, checks the token in constant time, answers ``WELCOME``, runs the node's handler on
each inbound message (inline up to its first suspension, then in a task) and writes the
replies; while its replies cannot leave, it stops reading requests.

Both ends are ``blocks.core.net.framing.FramedConnection`` (state, decoding with the limit
of the state, ``GOAWAY`` on bad input, the budget of bytes in progress, coalesced writes, flow
control) and know their transport only through ``ConnectionOwner``: its limits and counters,
its handler, and the hooks for the bookkeeping of connections and buffered bytes.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any

from blocks.core.errors import (
    BlocksError,
    InvalidArgument,
    Overloaded,
    PeerError,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from blocks.core.net.framing import ConnectionOwner, FramedConnection
from blocks.core.net.limits import ConnectionState
from blocks.core.transport import FrameKind, error_from_wire, error_to_wire

__all__ = ["ClientConnection", "ConnectionOwner", "FramedConnection", "ServerConnection"]

# The first two bytes of a TLS handshake (0x16) or alert (0x15) record: type, major version 3.
_TLS_RECORD_STARTS = (b"\x15\x03", b"\x16\x03")


def _is_http2_settings(data: bytes) -> bool:
    """Whether ``data`` opens with an HTTP/2 SETTINGS frame on stream 0, what a gRPC server
    sends first. Read as our 4-byte length it declares 0x1804 = 6,148 bytes or so; no frame of
    ours starts this way (a body of 4 bytes or fewer cannot open with a msgpack array and the
    zero byte that follows)."""
    return len(data) >= 9 and data[3] == 0x04 and data[4] in (0, 1) and data[5:9] == bytes(4)


DEADLINE_SLACK_S = 0.001
"""A request expires when the sweep finds it within this of its deadline: the loop's timers
are as coarse (uvloop's clock counts milliseconds), and an earlier sweep need not wait
another turn for the last fraction of a millisecond."""


class ClientConnection(FramedConnection):
    """The dialing side: sends requests, matches replies to waiting callers by id.

    Deadlines: each waiting request holds its own deadline; one timer per connection, armed
    for the earliest of them, sweeps out the expired ones (``Timeout``) and re-arms for the
    next, so a request costs a dict entry, not a timer of its own.
    """

    def __init__(self, owner: ConnectionOwner, peer_name: str) -> None:
        super().__init__(owner)
        self._peer_name = peer_name
        self._next_id = 0
        # request id -> (its future, its deadline in loop time, its timeout for the message)
        self._waiting: dict[int, tuple[asyncio.Future[Any], float, float]] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._sweep_at = 0.0  # when _sweep_timer fires; meaningless while it is None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.write([FrameKind.HELLO, self._owner.name, self._owner.token])

    def data_received(self, data: bytes) -> None:
        if self.life.state is ConnectionState.GREETING and data[:2] in _TLS_RECORD_STARTS:
            # No frame starts this way (it would declare a length over 300 MB): the listener
            # answered in TLS, most likely an alert to a dialer that should use TLS too.
            self.fail(Unavailable("the listener speaks TLS; dial it with tls_ca"))
            return
        if self.life.state is ConnectionState.GREETING and _is_http2_settings(data):
            # A gRPC (HTTP/2) server on that port: most often a wrong port in a peer list.
            self.fail(
                Unavailable("the listener speaks HTTP/2 (gRPC), not this protocol: wrong port?")
            )
            return
        super().data_received(data)

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind is FrameKind.WELCOME and self.life.state is ConnectionState.GREETING:
            if frame[1] != self._peer_name:
                raise PeerError(f"expected node {self._peer_name!r}, reached {frame[1]!r}")
            self.opened()
            self.ready.set_result(None)
        elif kind is FrameKind.GOAWAY:
            self._fail_all(error_from_wire(frame[1]))
            self.close()
        elif kind in (FrameKind.REPLY, FrameKind.FAILURE) and (
            self.life.state is ConnectionState.OPEN
        ):
            waiter = self._waiting.pop(frame[1], None)
            if waiter is None or waiter[0].done():
                self._owner.counters["late_replies"] += 1
            elif kind is FrameKind.REPLY:
                waiter[0].set_result(frame[2])
            else:
                waiter[0].set_exception(error_from_wire(frame[2]))
        else:
            raise PeerError(f"unexpected {kind.name} frame from a listener")

    async def request(self, message: Any, timeout_s: float) -> Any:
        """Send one request and await its reply; ``Overloaded`` at once past the bound,
        ``Timeout`` when no reply came within ``timeout_s``."""
        in_flight_max = self._owner.limits.in_flight_max
        if len(self._waiting) >= in_flight_max:
            raise Overloaded(
                f"{in_flight_max} requests already in flight to {self._peer_name!r}",
                retry_after_ms=1,
            )
        self._next_id += 1
        request_id = self._next_id
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.write([FrameKind.REQUEST, request_id, message])
        deadline = loop.time() + timeout_s
        self._waiting[request_id] = (future, deadline, timeout_s)
        if self._sweep_timer is None or deadline < self._sweep_at:
            self._arm_sweep(loop, deadline)
        try:
            if not self._writable.is_set():
                await self._writable.wait()
            return await future
        finally:
            self._waiting.pop(request_id, None)

    def _arm_sweep(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
        self._sweep_timer = loop.call_at(when, self._sweep)
        self._sweep_at = when

    def _sweep(self) -> None:
        """Fail the requests past their deadline with ``Timeout``; re-arm for the next."""
        self._sweep_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + DEADLINE_SLACK_S
        expired = [rid for rid, (_, deadline, _) in self._waiting.items() if deadline <= now]
        for request_id in expired:
            future, _, timeout_s = self._waiting.pop(request_id)
            if not future.done():
                future.set_exception(
                    Timeout(f"no reply from {self._peer_name!r} within {timeout_s} s")
                )
        if self._waiting:
            self._arm_sweep(loop, min(deadline for _, deadline, _ in self._waiting.values()))

    def fail(self, error: BlocksError, *, linger: bool = True) -> None:
        self._fail_all(error)
        super().fail(error, linger=linger)

    def _fail_all(self, error: BlocksError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
        for future, _, _ in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._fail_all(Unavailable(f"connection to {self._peer_name!r} lost"))
        self._owner.outbound_lost(self._peer_name, self)


class ServerConnection(FramedConnection):
    """The listening side: authenticates the dialer, runs the handler, writes replies."""

    budgeted = True

    def __init__(self, owner: ConnectionOwner) -> None:
        super().__init__(owner)
        self._peer_name = ""  # set by an accepted HELLO: the state is OPEN from then on
        self._tasks: set[asyncio.Future[Any]] = set()  # handlers' tasks and futures
        self._handshake_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        refusal = self._owner.connection_accepted(self)
        if refusal is not None:
            self.fail(refusal)
            return
        self._handshake_timer = asyncio.get_running_loop().call_later(
            self._owner.limits.handshake_timeout_s, self._maybe_expire_handshake
        )

    def pause_writing(self) -> None:
        # Back-pressure: while answers cannot leave (the dialer is not reading them), no new
        # requests are read either; a dialer always reads, so this cannot deadlock.
        super().pause_writing()
        if self._transport is not None and not self.closed:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _maybe_expire_handshake(self) -> None:
        if self.life.state is ConnectionState.GREETING:
            self._owner.counters["handshake_timeouts"] += 1
            self.fail(PeerError("no HELLO within the handshake timeout"))

    def handle_frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if self.life.state is ConnectionState.GREETING:
            if kind is not FrameKind.HELLO:
                raise PeerError(f"expected HELLO, got {kind.name}")
            self._handle_hello(frame[1], frame[2])
        elif kind in (FrameKind.REQUEST, FrameKind.ONEWAY):
            self._handle_message(frame)
        elif kind is FrameKind.GOAWAY:
            self.close()
        else:
            raise PeerError(f"unexpected {kind.name} frame from a dialer")

    def _handle_hello(self, peer_name: Any, token: Any) -> None:
        if not isinstance(peer_name, str) or not peer_name:
            raise PeerError("HELLO without a node name")
        expected = self._owner.token
        if expected is not None and not (
            isinstance(token, str) and hmac.compare_digest(token.encode(), expected.encode())
        ):
            self._owner.counters["unauthenticated"] += 1
            self.fail(Unauthenticated("missing or wrong bearer token"))
            return
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        self._peer_name = peer_name
        self.opened()
        self._owner.connection_opened(self)
        self.write([FrameKind.WELCOME, self._owner.name])

    def _handle_message(self, frame: list[Any]) -> None:
        """Run the handler on one inbound message: in a task of its own, or, for a handler
        served with ``inline=True``, inline up to its first suspension.

        An inline handler that answers without suspending (a lookup, a local write) replies
        here and costs no task; one that suspends goes on in a task from where it stopped,
        counted against ``in_flight_max``. An inline handler may also return an
        ``asyncio.Future`` (not a task): its result is the answer, sent from its done callback,
        with no task either; it counts against ``in_flight_max`` until done and is cancelled
        with the connection. Messages start in the order they arrived either way.
        """
        handler = self._owner.handler
        is_request = frame[0] is FrameKind.REQUEST
        if handler is None or len(self._tasks) >= self._owner.limits.in_flight_max:
            self._owner.counters["refused"] += 1
            if is_request:
                refusal = (
                    Unavailable(f"node {self._owner.name!r} has no handler")
                    if handler is None
                    else Overloaded("listener in_flight_max reached", retry_after_ms=1)
                )
                self.write([FrameKind.FAILURE, frame[1], error_to_wire(refusal)])
            return
        assert self._peer_name, "messages are handled only once the handshake is done"
        message = frame[2] if is_request else frame[1]
        request_id = frame[1] if is_request else None
        try:
            awaitable = handler(self._peer_name, message)
            if self._owner.handler_inline and type(awaitable) is asyncio.Future:
                self._answer_when_done(awaitable, request_id)
                return
            if not self._owner.handler_inline or type(awaitable) is not types.CoroutineType:
                self._start_task(self._finish(awaitable, request_id))
                return
            suspended_on = awaitable.send(None)
        except StopIteration as done:
            self._answer(request_id, done.value)
            return
        except asyncio.CancelledError:
            return  # as a cancelled task would: no answer
        except Exception as error:
            self._answer_failure(request_id, error)
            return
        self._start_task(self._finish(_resumed(awaitable, suspended_on), request_id))

    def _answer_when_done(self, future: asyncio.Future[Any], request_id: int | None) -> None:
        self._tasks.add(future)  # counted against in_flight_max and cancelled like a task
        future.add_done_callback(functools.partial(self._future_done, request_id))

    def _future_done(self, request_id: int | None, future: asyncio.Future[Any]) -> None:
        self._tasks.discard(future)
        if future.cancelled():
            return  # as a cancelled task would: no answer
        error = future.exception()
        if error is None:
            self._answer(request_id, future.result())
        elif isinstance(error, Exception):
            self._answer_failure(request_id, error)

    def _start_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, awaitable: Awaitable[Any], request_id: int | None) -> None:
        try:
            result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._answer_failure(request_id, error)
            return
        self._answer(request_id, result)
        await self.drain()

    def _answer(self, request_id: int | None, result: Any) -> None:
        if request_id is None:
            return
        try:
            self.write([FrameKind.REPLY, request_id, result])
        except InvalidArgument as error:
            self.write([FrameKind.FAILURE, request_id, error_to_wire(error)])

    def _answer_failure(self, request_id: int | None, error: Exception) -> None:
        self._owner.counters["handler_errors"] += 1
        if request_id is not None:
            self.write([FrameKind.FAILURE, request_id, error_to_wire(error)])

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        self._owner.connection_ended(self)


@types.coroutine
def _resumed(coroutine: Coroutine[Any, Any, Any], suspended_on: Any) -> Generator[Any, Any, Any]:
    """Go on with ``coroutine``, already run up to its first suspension on ``suspended_on``,
    inside the task awaiting this: what ``await coroutine`` would have done from there."""
    try:
        yield suspended_on
    except GeneratorExit:
        coroutine.close()
        raise
    except BaseException as error:  # the task was cancelled: pass it on, as await would
        try:
            suspended_on = coroutine.throw(error)
        except StopIteration as done:
            return done.value
        return (yield from _resumed(coroutine, suspended_on))
    return (yield from coroutine)
