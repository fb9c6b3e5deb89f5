"""The cache's framed-TCP data path: what the cluster client uses, its requests, its limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from gossip_nodes import gossiping_nodes
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.cache.dataclient import DataNode
from blocks.cache.datapath import (
    DATA_FRAME_BYTES_MAX,
    GET_MANY_KEYS_MAX,
    OP_GET,
)
from blocks.cache.discovery import MemberCluster
from blocks.cache.service import CacheService, build_server
from blocks.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    Overloaded,
    PeerError,
    Unauthenticated,
)
from blocks.core.server import Server
from blocks.core.transport import FrameDecoder, FrameKind, encode_frame, error_from_wire
from blocks.testing.ports import free_ports

TOKEN = "data-token"


@asynccontextmanager
async def _node(**options: Any) -> AsyncIterator[tuple[Server, CacheService, DataNode]]:
    port = free_ports(1)[0]
    server, service = build_server(
        capacity=1000, token=TOKEN, name="solo", port=port, leave_drain_s=0.0, **options
    )
    await server.start()
    assert service.data is not None and service.data.advertised is not None
    node = DataNode("solo", service.data.advertised, token=TOKEN, timeout_s=5.0)
    try:
        yield server, service, node
    finally:
        await node.close()
        await server.stop(grace_s=0.5)


async def _raw_greeted(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(encode_frame([FrameKind.HELLO, "stranger", TOKEN]))
    assert (await _read_frame(reader))[:2] == [FrameKind.WELCOME, "solo"]
    return reader, writer


async def _read_frame(reader: asyncio.StreamReader) -> list[Any]:
    decoder = FrameDecoder(DATA_FRAME_BYTES_MAX)
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "the connection closed before a whole frame"
        frames = decoder.feed(data)
        if frames:
            return frames[0]


async def _closed(reader: asyncio.StreamReader) -> bool:
    while True:
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            return True


def test_the_cluster_client_uses_the_data_path_not_grpc() -> None:
    async def main() -> None:
        async with gossiping_nodes(3, capacity=1000, token=TOKEN) as (addresses, services):
            async with await MemberCluster.connect(addresses, token=TOKEN, timeout_s=5.0) as c:
                assert c.data_path_nodes == ["n0", "n1", "n2"]
                keys = [f"k{i}" for i in range(50)]
                for i, key in enumerate(keys):
                    await c.put(key, {"i": i}, ttl=60)
                assert [await c.get(key) for key in keys] == [{"i": i} for i in range(50)]
                got = await c.get_many([*keys, "absent"])
                assert got == [*({"i": i} for i in range(50)), None]
                assert await c.delete("k0") is True and await c.get("k0") is None
            assert sum(s.grpc_data_calls for s in services) == 0
            served = [s.data.handler.calls for s in services if s.data is not None]
            assert len(served) == 3 and all(calls > 0 for calls in served)
            async with await MemberCluster.connect(
                addresses, token=TOKEN, timeout_s=5.0, data_path=False
            ) as grpc_only:
                assert grpc_only.data_path_nodes == [] and await grpc_only.get("k1") == {"i": 1}
            assert sum(s.grpc_data_calls for s in services) == 1

    asyncio.run(asyncio.wait_for(main(), 60))


def test_requests_views_ttls_and_bad_input() -> None:
    async def main() -> None:
        async with _node() as (_, service, node):
            assert service.gossip is not None
            view_id = service.gossip.view_id
            await node.put("a", b"1", view_id=view_id)
            await node.put("t", b"2", ttl=0.05)
            assert await node.get("a", view_id=view_id) == b"1"
            assert await node.get_many(["a", "b"]) == [b"1", None]
            with pytest.raises(FailedPrecondition):  # StaleView travels back by class
                await node.get("a", view_id=view_id + 1)
            await asyncio.sleep(0.1)
            assert await node.get("t") is None
            for bad in (
                lambda: node.put("", b"v"),
                lambda: node.put("k", b"v" * (1024 * 1024 + 1)),
                lambda: node.put("k", b"v", ttl=-1),
                lambda: node.get_many(["k"] * (GET_MANY_KEYS_MAX + 1)),
                lambda: node.call([OP_GET, -1, "k"]),
                lambda: node.call([99, 0, "k"]),
                lambda: node.call([OP_GET, 0]),
            ):
                with pytest.raises(InvalidArgument):
                    await bad()
            assert await node.get("a") == b"1"  # the same connection still serves
            assert node.stats()["dials"] == 1
            assert service.cache.stats().size == 1

    asyncio.run(asyncio.wait_for(main(), 30))


def test_an_oversize_frame_closes_that_connection_only() -> None:
    async def main() -> None:
        async with _node() as (_, service, node):
            assert service.data is not None and service.data.advertised is not None
            await node.put("k", b"v")
            reader, writer = await _raw_greeted(service.data.advertised)
            writer.write((DATA_FRAME_BYTES_MAX + 1).to_bytes(4, "big") + b"\x00" * 1024)
            goaway = await _read_frame(reader)
            assert goaway[0] == FrameKind.GOAWAY
            assert isinstance(error_from_wire(goaway[1]), PeerError)
            assert await _closed(reader)
            writer.close()
            # before the handshake the bound is a few KiB
            host, port = service.data.advertised.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(encode_frame([FrameKind.HELLO, "x" * 8192, TOKEN]))
            assert (await _read_frame(reader))[0] == FrameKind.GOAWAY
            assert await _closed(reader)
            writer.close()
            assert await node.get("k") == b"v"  # everyone else is served
            stats = service.data.transport.stats()
            assert stats["frames_too_large"] == 1
            assert stats["frames_too_large_before_handshake"] == 1

    asyncio.run(asyncio.wait_for(main(), 30))


def test_connections_past_the_bound_are_refused_cleanly() -> None:
    async def main() -> None:
        async with _node(data_connections_max=2) as (_, service, first):
            assert service.data is not None and service.data.advertised is not None
            address = service.data.advertised
            second = DataNode("solo", address, token=TOKEN, timeout_s=5.0)
            third = DataNode("solo", address, token=TOKEN, timeout_s=5.0)
            try:
                await first.put("k", b"v")
                assert await second.get("k") == b"v"
                with pytest.raises(Overloaded):
                    await third.get("k")
                assert service.data.transport.stats()["connections_refused"] == 1
                assert await first.get("k") == b"v" and await second.get("k") == b"v"
                await second.close()
                await asyncio.sleep(0.2)  # the listener notices the close
                assert await third.get("k") == b"v"
            finally:
                await second.close()
                await third.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_wrong_token_and_a_wrong_node_are_refused() -> None:
    async def main() -> None:
        async with _node() as (_, service, _node_client):
            assert service.data is not None and service.data.advertised is not None
            async with asyncio.timeout(10):
                wrong_token = DataNode("solo", service.data.advertised, token="nope")
                wrong_name = DataNode("other", service.data.advertised, token=TOKEN)
                try:
                    with pytest.raises(Unauthenticated):
                        await wrong_token.get("k")
                    with pytest.raises(PeerError):
                        await wrong_name.get("k")
                finally:
                    await wrong_token.close()
                    await wrong_name.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_calls_in_flight_share_batches_and_oversize_replies_are_resent() -> None:
    frame_bytes_max = 1200 * 1024  # room for one large value per reply, not two
    large = [bytes([n]) * (600 * 1024) for n in range(2)]

    async def main() -> None:
        async with _node(data_frame_bytes_max=frame_bytes_max) as (_, service, _unused):
            assert service.data is not None and service.data.advertised is not None
            node = DataNode(
                "solo", service.data.advertised, token=TOKEN, frame_bytes_max=frame_bytes_max
            )
            try:
                await asyncio.gather(*(node.put(f"k{i}", b"%d" % i) for i in range(64)))
                got = await asyncio.gather(*(node.get(f"k{i}") for i in range(64)))
                assert got == [b"%d" % i for i in range(64)]
                assert node.stats()["batches_sent"] < 20  # 128 calls, a few frames
                await node.put("big0", large[0])
                await node.put("big1", large[1])
                sent = node.stats()["batches_sent"]
                assert await asyncio.gather(node.get("big0"), node.get("big1")) == large
                assert node.stats()["batches_sent"] == sent + 2  # the second was resent
            finally:
                await node.close()

    asyncio.run(asyncio.wait_for(main(), 30))


calls = st.lists(
    st.tuples(
        st.sampled_from(["get", "put", "delete", "get_many"]),
        st.sampled_from(["a", "b", "c"]),
        st.binary(max_size=8),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=25, deadline=None)
@given(calls)
def test_calls_made_in_one_turn_run_in_order_as_on_a_dict(script: list[Any]) -> None:
    """Calls gathered in one turn leave as one batch; the node runs them in the order they
    were made, so their replies are those of the same calls on a dict."""
    model: dict[str, bytes] = {}
    expected: list[Any] = []
    for op, key, value in script:
        if op == "get":
            expected.append(model.get(key))
        elif op == "get_many":
            expected.append([model.get(key), model.get("a")])
        elif op == "put":
            model[key] = value
            expected.append(None)
        else:
            expected.append(model.pop(key, None) is not None)

    async def main() -> None:
        server, service = build_server(capacity=1000)  # alone: no gossip, a quick stop
        await server.start()
        assert service.data is not None and service.data.advertised is not None
        node = DataNode("cache", service.data.advertised)
        try:
            replies = await asyncio.gather(
                *(
                    node.get(key)
                    if op == "get"
                    else node.get_many([key, "a"])
                    if op == "get_many"
                    else node.put(key, value)
                    if op == "put"
                    else node.delete(key)
                    for op, key, value in script
                )
            )
            assert replies == expected
            assert node.stats()["batches_sent"] == 1
        finally:
            await node.close()
            await server.stop(grace_s=0)

    asyncio.run(asyncio.wait_for(main(), 30))
