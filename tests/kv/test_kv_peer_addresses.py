"""Which address a kv node dials for a peer: the one it was given, else the one the peer
advertises. Both matter for the fault kit's per-link proxies (``blocks.testing.Network``),
which only see the traffic of nodes that dial them.

* A peer given at start (``--peer ID=HOST:PORT``) is always dialed there; gossip no longer
  replaces that address with the peer's own ``--listen``, which used to take every kv link
  around the proxies the kit had put on it.
* ``--advertise HOST:PORT`` is the address a node gossips (default ``--listen``): peers that
  were not given it, and clients, dial that.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from blocks.core.errors import BlocksError, InvalidArgument
from blocks.kv.client import connect
from blocks.kv.service import NodeProcess, build_node
from blocks.testing import LinkProxy, Network, ProcessCluster
from blocks.testing.process import free_ports
from blocks.testing.servers import kv_spec

DEADLINE_S = 60.0  # generous: only a failing run waits it out
PUT_TIMEOUT_S = 1.0  # each write that must fail waits this out; retries cover a slow success


async def _eventually(call: Callable[[], Awaitable[object]], what: str) -> None:
    """``call()`` until it succeeds, polling, within ``DEADLINE_S``."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while True:
        try:
            await call()
            return
        except BlocksError as error:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{what}: still failing: {error!r}") from None
        await asyncio.sleep(0.2)


async def _fails(call: Callable[[], Awaitable[object]]) -> BlocksError:
    try:
        await call()
    except BlocksError as error:
        return error
    raise AssertionError("a write that needs the cut link succeeded: the link was bypassed")


@pytest.mark.process
def test_a_cut_link_between_kv_processes_stops_their_traffic(tmp_path: Path) -> None:
    with (
        ProcessCluster(kv_spec(), ["n1", "n2", "n3"], tmp_path) as nodes,
        Network(nodes, "listen") as network,
        nodes.failure_notes("kv links through proxies"),
    ):
        nodes.start_all()
        asyncio.run(_cut_and_heal(nodes, network))
        assert network.bytes_dropped() > 0, "the isolation dropped nothing"


async def _cut_and_heal(nodes: ProcessCluster, network: Network) -> None:
    async with await connect(
        nodes.addresses(), token=nodes.token, timeout_s=PUT_TIMEOUT_S
    ) as client:

        async def put_everywhere(key: str) -> None:
            await client.put(key, b"v", w=3, timeout_s=PUT_TIMEOUT_S)

        await _eventually(lambda: put_everywhere("before"), "w=3 before the cut")
        network.isolate("n3")
        await asyncio.sleep(1.0)  # gossip, were it dialing around the proxies, would go on
        for number in range(3):
            await _fails(functools.partial(put_everywhere, f"during-{number}"))
        network.heal()
        await _eventually(lambda: put_everywhere("after"), "w=3 after the heal")
        assert (await client.get("after")).value == b"v"


def test_advertise_is_the_address_peers_learn_and_dial(tmp_path: Path) -> None:
    """c advertises a proxy in front of itself; b, which knows only a, learns c's address by
    gossip and dials the proxy, so cutting the proxy cuts b from c."""
    asyncio.run(_advertised(tmp_path))


async def _advertised(root: Path) -> None:
    listen = {name: f"127.0.0.1:{port}" for name, port in zip("abc", free_ports(3), strict=True)}
    with pytest.raises(InvalidArgument):
        build_node("x", listen=listen["a"], data_dir=root / "x", advertise="nowhere")
    with LinkProxy(listen["c"]) as proxy:
        processes = {
            "a": build_node("a", listen=listen["a"], data_dir=root / "a"),
            "b": build_node("b", listen=listen["b"], data_dir=root / "b", peers={"a": listen["a"]}),
            "c": build_node(
                "c",
                listen=listen["c"],
                data_dir=root / "c",
                peers={"a": listen["a"]},
                advertise=proxy.address,
            ),
        }
        for process in processes.values():
            await process.transport.start()
            await process.node.start()
        try:
            await _check_advertised(processes, proxy)
        finally:
            for process in processes.values():
                await process.node.stop()
                await process.transport.close()


async def _check_advertised(processes: dict[str, NodeProcess], proxy: LinkProxy) -> None:
    b = processes["b"].node

    async def c_known_at_proxy() -> None:
        addresses = {name: address for name, address, _ in b.members()["nodes"]}
        if addresses.get("c") != proxy.address:
            raise InvalidArgument(f"b knows c at {addresses.get('c')!r}")

    async def put_through_b(key: bytes) -> None:
        await b.put(key, b"v", write_quorum=3, timeout_s=PUT_TIMEOUT_S)

    await _eventually(c_known_at_proxy, "b learns c's advertised address")
    await _eventually(lambda: put_through_b(b"before"), "w=3 through b")
    proxy.cut()
    await _fails(lambda: put_through_b(b"during"))
    proxy.heal()
    await _eventually(lambda: put_through_b(b"after"), "w=3 through b after the heal")
