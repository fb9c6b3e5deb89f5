"""TcpTransport's per-turn machinery: gathered writes, handlers in a task each or (asked for)
inline up to their first suspension, one deadline sweep per connection, and back-pressure on a dialer that stops
reading.

Every test runs under a wall-clock bound and closes what it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from blocks.core.errors import BlocksError, InvalidArgument, Timeout, Unavailable
from blocks.core.net import TcpTransport
from blocks.core.transport import FrameDecoder, FrameKind, encode_frame


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


async def _pair(
    handler: Any, *, inline: bool = False, **options: Any
) -> tuple[TcpTransport, TcpTransport]:
    server = TcpTransport("b", **options)
    await server.start()
    server.serve(handler, inline=inline)
    assert server.address is not None
    return server, TcpTransport("a", listen=None, peers={"b": server.address})


async def _echo(source: str, message: Any) -> Any:
    return message


class _CountingTransport:
    """Stands in for a connection's socket transport and counts the calls that write."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls = 0

    def write(self, data: bytes) -> None:
        self.calls += 1
        self._inner.write(data)

    def writelines(self, buffers: list[bytes]) -> None:
        self.calls += 1
        self._inner.writelines(buffers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_the_frames_of_one_turn_leave_in_one_socket_write() -> None:
    async def body() -> None:
        server, client = await _pair(_echo)
        try:
            assert await client.request("b", 0) == 0  # dialed and greeted
            connection = client._outbound["b"]
            counting = _CountingTransport(connection._transport)
            connection._transport = counting  # type: ignore[assignment]
            replies = await asyncio.gather(*(client.request("b", n) for n in range(10)))
            assert replies == list(range(10))
            assert counting.calls == 1
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_an_inline_handler_runs_inline_until_it_suspends_then_in_a_task() -> None:
    async def body() -> None:
        seen: list[tuple[Any, bool]] = []

        async def handler(source: str, message: Any) -> Any:
            seen.append((message, asyncio.current_task() is None))
            if message == "slow":
                await asyncio.sleep(0.01)
                seen.append(("resumed", asyncio.current_task() is None))
            if message == "bad":
                raise InvalidArgument("bad message")
            return message

        server, client = await _pair(handler, inline=True)
        try:
            assert await client.request("b", "fast") == "fast"
            assert await client.request("b", "slow") == "slow"
            with pytest.raises(InvalidArgument, match="bad message"):
                await client.request("b", "bad")
            await client.send("b", "one-way")
            assert await client.request("b", "after") == "after"
            assert seen == [
                ("fast", True),
                ("slow", True),
                ("resumed", False),
                ("bad", True),
                ("one-way", True),
                ("after", True),
            ]
            assert server.stats()["handler_errors"] == 1
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_an_inline_handler_may_answer_with_a_future_and_no_task() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[Any, asyncio.Future[Any]] = {}
        tasks_seen: list[int] = []

        def handler(source: str, message: Any) -> Any:
            tasks_seen.append(len(asyncio.all_tasks()))
            waiting[message] = future = loop.create_future()
            return future

        server, client = await _pair(handler, inline=True)
        try:
            asked = [asyncio.ensure_future(client.request("b", m)) for m in ("ok", "bad", "gone")]
            while len(waiting) < 3:
                await asyncio.sleep(0.001)
            connection = next(iter(server._accepted))
            assert len(connection._tasks) == 3  # counted against in_flight_max until done
            waiting["ok"].set_result("answered")
            waiting["bad"].set_exception(InvalidArgument("refused"))
            assert await asyncio.wait_for(asked[0], 5) == "answered"
            with pytest.raises(InvalidArgument, match="refused"):
                await asyncio.wait_for(asked[1], 5)
            assert len(connection._tasks) == 1
            await client.close()  # the connection goes: its waiting future is cancelled
            await asyncio.sleep(0.05)
            assert waiting["gone"].cancelled() and not connection._tasks
            assert max(tasks_seen) == min(tasks_seen)  # no task was started per message
            assert server.stats()["handler_errors"] == 1
        finally:
            for task in asked:
                task.cancel()
            await client.close()
            await server.close()

    _run(body)


@pytest.mark.parametrize("inline", [False, True])
def test_messages_start_in_arrival_order_whether_inline_or_not(inline: bool) -> None:
    async def body() -> None:
        started: list[int] = []

        async def handler(source: str, message: int) -> int:
            started.append(message)
            if message % 3 == 0:
                await asyncio.sleep(0.001 * (10 - message))
            return message

        server, client = await _pair(handler, inline=inline)
        try:
            replies = await asyncio.gather(*(client.request("b", n) for n in range(10)))
            assert replies == list(range(10))
            assert started == list(range(10))
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_a_handler_runs_in_a_task_unless_served_inline() -> None:
    """Handlers written for a task (``asyncio.timeout``, ``current_task``) keep working: only
    a handler served with ``inline=True`` starts outside one."""

    async def body() -> None:
        async def handler(source: str, message: Any) -> Any:
            async with asyncio.timeout(1):  # RuntimeError outside a task
                return [message, asyncio.current_task() is not None]

        server, client = await _pair(handler)
        try:
            assert await client.request("b", "x") == ["x", True]
            await client.send("b", "one-way")
            assert await client.request("b", "y") == ["y", True]
            assert server.stats().get("handler_errors", 0) == 0
            server.serve(handler, inline=True)
            with pytest.raises(BlocksError, match="RuntimeError"):
                await client.request("b", "z")
            with pytest.raises(InvalidArgument):
                server.serve(handler, inline=1)  # type: ignore[arg-type]
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_a_suspended_handler_is_cancelled_when_its_connection_is_lost() -> None:
    async def body() -> None:
        cancelled = asyncio.Event()
        started = asyncio.Event()

        async def handler(source: str, message: Any) -> Any:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        server, client = await _pair(handler)
        try:
            waiting = asyncio.ensure_future(client.request("b", 1, timeout_s=10))
            await started.wait()
            await client.close()
            with pytest.raises(Exception):  # noqa: B017 - Cancelled, the client closed
                await waiting
            await asyncio.wait_for(cancelled.wait(), 5)
        finally:
            await server.close()

    _run(body)


def test_deadlines_are_swept_by_one_timer_per_connection() -> None:
    async def body() -> None:
        release = asyncio.Event()

        async def handler(source: str, message: Any) -> Any:
            await release.wait()
            return message

        server, client = await _pair(handler)
        loop = asyncio.get_running_loop()
        try:
            long = [asyncio.ensure_future(client.request("b", n, timeout_s=30)) for n in range(50)]
            short = asyncio.ensure_future(client.request("b", "short", timeout_s=0.2))
            started = loop.time()
            await asyncio.sleep(0.05)
            timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
            assert len(timers) <= 3  # not one per request in flight
            with pytest.raises(Timeout, match="no reply from"):
                await short
            assert 0.19 <= loop.time() - started < 5
            assert not any(f.done() for f in long)  # the longer deadlines still run
            release.set()
            assert await asyncio.gather(*long) == list(range(50))
            assert server.stats().get("handler_errors", 0) == 0
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_a_late_reply_after_the_sweep_is_counted_and_dropped() -> None:
    async def body() -> None:
        async def slow(source: str, message: Any) -> Any:
            await asyncio.sleep(0.3)
            return message

        server, client = await _pair(slow)
        try:
            with pytest.raises(Timeout):
                await client.request("b", 1, timeout_s=0.05)
            await asyncio.sleep(0.4)
            assert client.stats()["late_replies"] == 1
            assert await client.request("b", 2, timeout_s=2) == 2
        finally:
            await client.close()
            await server.close()

    _run(body)


def test_a_dialer_that_stops_reading_stops_the_listener_reading_its_requests() -> None:
    async def body() -> None:
        server = TcpTransport("b")
        await server.start()
        server.serve(_echo)
        assert server.address is not None
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(encode_frame([FrameKind.HELLO, "raw", None]))
            payload = b"x" * 65536
            request = encode_frame([FrameKind.REQUEST, 1, payload])
            (accepted,) = server._accepted
            for _ in range(400):  # up to 26 MB of replies that are never read
                writer.write(request)
                await asyncio.sleep(0)
                if not accepted._transport.is_reading():  # type: ignore[union-attr]
                    break
            assert not accepted._transport.is_reading()  # type: ignore[union-attr]
            # Reading again lets the replies leave and the listener read again.
            decoder, replies = FrameDecoder(), 0
            while not accepted._transport.is_reading():  # type: ignore[union-attr]
                frames = decoder.feed(await asyncio.wait_for(reader.read(1 << 20), 5))
                replies += sum(1 for f in frames if f[0] is FrameKind.REPLY)
            assert replies > 0
        finally:
            writer.close()
            await server.close()

    _run(body)


def test_an_unreachable_listener_still_fails_requests_fast() -> None:
    async def body() -> None:
        client = TcpTransport("a", listen=None, peers={"b": ("127.0.0.1", 1)})
        try:
            with pytest.raises(Unavailable):
                await client.request("b", 1, timeout_s=2)
        finally:
            await client.close()

    _run(body)


def test_an_inline_handler_can_dial_a_peer_it_has_no_connection_to() -> None:
    # Dialing is bound to a deadline (asyncio.timeout_at); an inline handler's first step
    # runs outside any task, so the dial must bring its own.
    async def body() -> None:
        far = TcpTransport("c")
        await far.start()
        far.serve(_echo)
        assert far.address is not None
        middle = TcpTransport("b", peers={"c": far.address})
        await middle.start()

        async def forward(source: str, message: Any) -> Any:
            return await middle.request("c", message, timeout_s=5)

        middle.serve(forward, inline=True)
        assert middle.address is not None
        client = TcpTransport("a", listen=None, peers={"b": middle.address})
        try:
            assert await client.request("b", "hop", timeout_s=5) == "hop"
            assert middle.stats()["dials"] == 1
        finally:
            await client.close()
            await middle.close()
            await far.close()

    _run(body)
