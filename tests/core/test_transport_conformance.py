"""The Transport contract, checked the same way against every implementation.

Each test gets a ``make_pair`` factory that builds two connected nodes, "a" (caller) and "b"
(server), on a fresh network, and runs its body on the loop that implementation needs: the
virtual-time loop for MemoryNetwork, a real loop for MemoryNetwork too (so nothing depends on
virtual time), and a real loop with TCP sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from blocks.core.errors import (
    BlocksError,
    Cancelled,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Timeout,
    Unavailable,
)
from blocks.core.memory_network import MemoryNetwork
from blocks.core.net import TcpTransport
from blocks.core.transport import Transport
from blocks.testing import run_simulation

Pair = tuple[Transport, Transport]
PairFactory = Callable[[], AbstractAsyncContextManager[Pair]]
Runner = Callable[[Callable[[PairFactory], Awaitable[None]]], None]


@asynccontextmanager
async def _memory_pair() -> AsyncIterator[Pair]:
    network = MemoryNetwork(seed=7)
    a, b = network.transport("a"), network.transport("b")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


@asynccontextmanager
async def _tcp_pair() -> AsyncIterator[Pair]:
    b = TcpTransport("b", token="t0ken")
    await b.start()
    assert b.address is not None
    a = TcpTransport("a", listen=None, peers={"b": b.address}, token="t0ken")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


def _run_virtual(body: Callable[[PairFactory], Awaitable[None]]) -> None:
    run_simulation(lambda sim: body(_memory_pair), seed=1)


def _run_real_memory(body: Callable[[PairFactory], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(_memory_pair), 20))


def _run_tcp(body: Callable[[PairFactory], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(_tcp_pair), 20))


@pytest.fixture(params=["memory-virtual", "memory-real", "tcp"])
def run(request: pytest.FixtureRequest) -> Runner:
    return {"memory-virtual": _run_virtual, "memory-real": _run_real_memory, "tcp": _run_tcp}[
        request.param
    ]


async def _echo(source: str, message: Any) -> Any:
    return {"from": source, "echo": message}


def test_is_a_transport(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            assert isinstance(a, Transport) and isinstance(b, Transport)
            assert (a.name, b.name) == ("a", "b")

    run(body)


def test_request_gets_the_handlers_reply(run: Runner) -> None:
    message = {"key": b"\x00\xff", "values": [1, -2, 3.5, None, True, "text"]}

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(_echo)
            assert await a.request("b", message, timeout_s=5) == {"from": "a", "echo": message}

    run(body)


def test_concurrent_requests_each_get_their_own_reply(run: Runner) -> None:
    async def slow_square(source: str, message: Any) -> Any:
        await asyncio.sleep(0.001 * (20 - message))  # later requests finish first
        return message * message

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(slow_square)
            replies = await asyncio.gather(*(a.request("b", n) for n in range(20)))
            assert replies == [n * n for n in range(20)]

    run(body)


def test_one_way_messages_reach_the_handler(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        received: list[tuple[str, Any]] = []
        done = asyncio.Event()

        async def collect(source: str, message: Any) -> Any:
            received.append((source, message))
            if len(received) == 3:
                done.set()
            return "ignored"

        async with make_pair() as (a, b):
            b.serve(collect)
            for n in range(3):
                await a.send("b", n)
            await asyncio.wait_for(done.wait(), 5)
            assert sorted(received) == [("a", 0), ("a", 1), ("a", 2)]

    run(body)


@pytest.mark.parametrize(
    "error",
    [Conflict("version 3 != 4"), NotFound("no such key"), InvalidArgument("bad"), Timeout("t")],
)
def test_remote_blocks_errors_keep_their_class_and_message(run: Runner, error: BlocksError) -> None:
    async def failing(source: str, message: Any) -> Any:
        raise error

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(failing)
            with pytest.raises(type(error)) as caught:
                await a.request("b", 1)
            assert type(caught.value) is type(error)
            assert str(caught.value) == str(error)

    run(body)


def test_overloaded_keeps_retry_after(run: Runner) -> None:
    async def busy(source: str, message: Any) -> Any:
        raise Overloaded("slow down", retry_after_ms=250)

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(busy)
            with pytest.raises(Overloaded) as caught:
                await a.request("b", 1)
            assert caught.value.retry_after_ms == 250

    run(body)


def test_other_remote_exceptions_arrive_as_plain_blocks_error(run: Runner) -> None:
    async def buggy(source: str, message: Any) -> Any:
        raise ZeroDivisionError("secret detail")

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(buggy)
            with pytest.raises(BlocksError) as caught:
                await a.request("b", 1)
            assert type(caught.value) is BlocksError
            assert "ZeroDivisionError" in str(caught.value)
            assert "secret" not in str(caught.value)
            b.serve(_echo)  # and the node keeps serving
            assert (await a.request("b", 2))["echo"] == 2

    run(body)


def test_unknown_destination_is_unavailable(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, _b):
            with pytest.raises(Unavailable):
                await a.request("nobody", 1, timeout_s=1)
            await a.send("nobody", 1)  # one-way: dropped, never raises

    run(body)


def test_no_handler_yet_is_unavailable(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, _b):
            with pytest.raises(Unavailable):
                await a.request("b", 1, timeout_s=1)

    run(body)


def test_slow_handler_times_out(run: Runner) -> None:
    async def sleepy(source: str, message: Any) -> Any:
        await asyncio.sleep(10)
        return None

    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(sleepy)
            with pytest.raises(Timeout):
                await a.request("b", 1, timeout_s=0.05)

    run(body)


def test_bad_arguments_raise_invalid_argument(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(_echo)
            with pytest.raises(InvalidArgument):
                await a.request("b", {1, 2})  # a set is not msgpack
            with pytest.raises(InvalidArgument):
                await a.send("b", object())
            for bad_timeout in (0, -1.0, float("nan"), float("inf")):
                with pytest.raises(InvalidArgument):
                    await a.request("b", 1, timeout_s=bad_timeout)
            assert (await a.request("b", 1))["echo"] == 1  # nothing broke

    run(body)


def test_close_fails_waiting_requests_and_later_calls(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        started = asyncio.Event()

        async def never(source: str, message: Any) -> Any:
            started.set()
            await asyncio.sleep(3600)

        async with make_pair() as (a, b):
            b.serve(never)
            waiting = asyncio.ensure_future(a.request("b", 1, timeout_s=60))
            await started.wait()
            await a.close()
            with pytest.raises(Cancelled):
                await waiting
            await a.close()  # idempotent
            with pytest.raises(FailedPrecondition):
                await a.request("b", 1)
            with pytest.raises(FailedPrecondition):
                await a.send("b", 1)

    run(body)


def test_closed_destination_is_unreachable(run: Runner) -> None:
    async def body(make_pair: PairFactory) -> None:
        async with make_pair() as (a, b):
            b.serve(_echo)
            await a.request("b", 1)
            await b.close()
            with pytest.raises((Unavailable, Timeout)):
                await a.request("b", 2, timeout_s=0.5)

    run(body)
