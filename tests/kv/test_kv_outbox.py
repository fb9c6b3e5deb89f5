"""The driver's per-peer ``Outbox`` over TCP: messages leave in push order, and once the
connection is open a push with nothing queued before it is written at once, not by the task."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from blocks.core.net import TcpTransport
from blocks.kv.cluster.driver_io import Outbox


def test_pushes_arrive_in_order_and_an_open_connection_takes_them_at_once() -> None:
    async def main() -> None:
        arrived: list[Any] = []
        all_in = asyncio.Event()
        total = 300

        async def record(source: str, message: Any) -> None:
            arrived.append(message)
            if len(arrived) == total:
                all_in.set()

        server = TcpTransport("b")
        await server.start()
        server.serve(record)
        assert server.address is not None
        client = TcpTransport("a", listen=None, peers={"b": server.address})
        counters: Counter[str] = Counter()
        outbox = Outbox(client, "b", 10_000, counters)
        try:
            for n in range(100):  # the first dials: these wait in the queue behind it
                outbox.push([n])
            while len(arrived) < 100:
                await asyncio.sleep(0.001)
            for n in range(100, 200):  # open connection, nothing queued: written at once
                outbox.push([n])
                assert not outbox._ready.is_set()  # the task was not needed
            await asyncio.sleep(0)
            for n in range(200, total):  # mixed with loop turns
                outbox.push([n])
                if n % 7 == 0:
                    await asyncio.sleep(0)
            await asyncio.wait_for(all_in.wait(), 10)
            assert arrived == [[n] for n in range(total)]
            assert counters["send_failures"] == 0 and counters["outbox_dropped"] == 0
        finally:
            outbox.close()
            await client.close()
            await server.close()

    asyncio.run(main())


def test_a_message_that_cannot_be_encoded_is_counted_not_raised() -> None:
    async def main() -> None:
        async def ignore(source: str, message: Any) -> None:
            return None

        server = TcpTransport("b")
        await server.start()
        server.serve(ignore)
        assert server.address is not None
        client = TcpTransport("a", listen=None, peers={"b": server.address})
        counters: Counter[str] = Counter()
        outbox = Outbox(client, "b", 10, counters)
        try:
            await client.request("b", 1)  # connected
            outbox.push([{1, 2}])  # a set is not msgpack
            assert counters["send_failures"] == 1
        finally:
            outbox.close()
            await client.close()
            await server.close()

    asyncio.run(main())
