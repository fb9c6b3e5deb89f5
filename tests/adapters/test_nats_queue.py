"""``NatsQueue`` on a real ``nats-server -js``: what it claims of the queue API (send,
receive, ack, receipts, the server's ack wait as visibility timeout, dead letters after
``max_receives``, dedup by message id, bad input), refusals of what JetStream lacks, and a
server restart. Visibility runs on the server's clock, so that test waits in real time
(a 300 ms ack wait, polled with a generous deadline)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unavailable
from blocks.testing.engines import NatsServer

nats_queue = pytest.importorskip("blocks.queue.adapters.nats", reason="nats-py not installed")

DEADLINE_S = 30.0


def _run(url: str, scenario: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        queue = await nats_queue.NatsQueue.open(url, namespace=f"q{uuid.uuid4().hex[:10]}_")
        try:
            await scenario(queue)
        finally:
            await queue.close()

    asyncio.run(main())


async def _receive_until(queue: Any, name: str) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while True:
        got = await queue.receive(name, wait_ms=200)
        if got:
            return list(got)
        assert loop.time() < deadline, f"nothing received from {name} in {DEADLINE_S} s"


def test_send_receive_ack_and_receipts(nats_server: NatsServer) -> None:
    async def scenario(queue: Any) -> None:
        await queue.create_queue("work")
        await queue.create_queue("work")  # the same again: a no-op
        with pytest.raises(AlreadyExists):
            await queue.create_queue("work", visibility_ms=5)
        ids = [await queue.send("work", b"m%d" % i) for i in range(3)]
        got = await queue.receive("work", max_messages=3, wait_ms=1_000)
        assert [(m.id, m.body, m.receive_count) for m in got] == [
            (ids[i], b"m%d" % i, 1) for i in range(3)
        ]
        await queue.ack("work", got[0].receipt)
        with pytest.raises(NotFound):
            await queue.ack("work", got[0].receipt)
        await queue.nack("work", got[1].receipt)
        again = await _receive_until(queue, "work")
        assert (again[0].id, again[0].receive_count) == (ids[1], 2)
        with pytest.raises(Conflict):
            await queue.ack("work", got[1].receipt)  # the older delivery's receipt
        await queue.ack("work", again[0].receipt)
        await queue.ack("work", got[2].receipt)
        assert await queue.receive("work") == []

    _run(nats_server.url, scenario)


def test_ack_wait_is_the_visibility_timeout(nats_server: NatsServer) -> None:
    async def scenario(queue: Any) -> None:
        await queue.create_queue("work", visibility_ms=300)
        sent = await queue.send("work", b"x")
        first = await _receive_until(queue, "work")
        second = await _receive_until(queue, "work")  # after the server's ack wait
        assert [(m.id, m.receive_count) for m in first + second] == [(sent, 1), (sent, 2)]

    _run(nats_server.url, scenario)


def test_dead_letters_after_max_receives(nats_server: NatsServer) -> None:
    async def scenario(queue: Any) -> None:
        await queue.create_queue("dlq")
        await queue.create_queue("work", max_receives=2, dead_letter="dlq")
        await queue.send("work", b"poison")
        for count in (1, 2):
            got = await _receive_until(queue, "work")
            assert got[0].receive_count == count
            await queue.nack("work", got[0].receipt)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while queue.dead_lettered == 0:  # the third delivery moves it
            assert await queue.receive("work", wait_ms=200) == []
            assert loop.time() < deadline
        dead = await _receive_until(queue, "dlq")
        assert [(m.body, m.receive_count) for m in dead] == [(b"poison", 1)]

    _run(nats_server.url, scenario)


def test_dedup_by_message_id(nats_server: NatsServer) -> None:
    async def scenario(queue: Any) -> None:
        await queue.create_queue("work")
        first = await queue.send("work", b"a", dedup_id="d1")
        assert await queue.send("work", b"a", dedup_id="d1") == first
        got = await queue.receive("work", max_messages=5, wait_ms=500)
        assert [m.id for m in got] == [first]

    _run(nats_server.url, scenario)


def test_bad_input_and_what_jetstream_lacks(nats_server: NatsServer) -> None:
    async def scenario(queue: Any) -> None:
        await queue.create_queue("work")
        with pytest.raises(NotFound):
            await queue.send("nope", b"x")
        with pytest.raises(NotFound):
            await queue.create_queue("w2", dead_letter="nope")
        for kwargs in ({"priority": 256}, {"priority": 3}, {"delay_ms": 10}, {"group": "g"}):
            with pytest.raises(InvalidArgument):
                await queue.send("work", b"x", **kwargs)
        with pytest.raises(InvalidArgument):
            await queue.create_queue("f", fifo=True)
        with pytest.raises(InvalidArgument):
            await queue.receive("work", max_messages=0)
        with pytest.raises(InvalidArgument):
            await queue.receive("work", visibility_ms=5)
        for receipt in ("", "x", "1.", ".1", "1.2.3"):
            with pytest.raises(InvalidArgument):
                await queue.ack("work", receipt)
        assert await queue.receive("work") == []

    _run(nats_server.url, scenario)


def test_sent_messages_survive_a_server_restart(tmp_path: Path) -> None:
    async def scenario(server: NatsServer) -> None:
        queue = await nats_queue.NatsQueue.open(server.url)
        try:
            await queue.create_queue("work")
            ids = [await queue.send("work", b"m%d" % i) for i in range(5)]
            server.stop()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while queue.connected:
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
            with pytest.raises(Unavailable):
                await queue.send("work", b"lost?")
            server.start()
            got: list[Any] = []
            while len(got) < len(ids):
                assert loop.time() < deadline, got
                try:
                    got += await queue.receive("work", max_messages=5, wait_ms=200)
                except Unavailable:
                    await asyncio.sleep(0.1)
            assert [m.id for m in got] == ids
        finally:
            await queue.close()

    with NatsServer(tmp_path / "store") as server:
        asyncio.run(scenario(server))
