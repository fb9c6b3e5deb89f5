"""A Redis Cluster of real ``redis-server`` processes for tests: ``RedisClusterProcesses``.

Theory of operation
-------------------
Each master is a ``RedisServer`` started with ``--cluster-enabled yes`` (its
``nodes.conf`` and append-only file in its own directory under ``store_dir``). ``start()``
then forms the cluster through the python client the way ``redis-cli --cluster create``
does, without replicas:

1. every node ``CLUSTER MEET``s the first one (gossip spreads the rest);
2. the 16,384 hash slots are split into ``masters`` contiguous ranges, each given to one
   node with ``CLUSTER ADDSLOTS`` (``ADDSLOTSRANGE`` is Redis 7; the wheel's server is 6.2);
3. it polls every node until ``CLUSTER INFO`` says ``cluster_state:ok`` and it knows all
   ``masters`` nodes, for at most ``FORM_TIMEOUT_S`` (generous: gossip is slow on a loaded
   machine), else ``TimeoutError``.

A cluster node also listens on its *bus port*, its port + 10,000 (Redis 6.2 has no
``cluster-port`` setting): ``cluster_ports`` picks ports whose bus ports are free too and
both below the kernel's ephemeral range, like ``blocks.testing.ports.free_ports``, and a
node that still fails to start (its bus port taken meanwhile) is retried on new ports, at
most ``START_ATTEMPTS_MAX`` times.

``url`` names the first node; a cluster client (``redis.cluster.RedisCluster``) finds the
others from it. ``stop()`` stops every node. Use it as a context manager::

    with RedisClusterProcesses(tmp_path) as cluster:
        client = redis.cluster.RedisCluster.from_url(cluster.url)
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path
from typing import Any, Self

from blocks.testing.engines import RedisServer
from blocks.testing.ports import LISTEN_PORTS_LOW

__all__ = [
    "CLUSTER_SLOTS",
    "FORM_TIMEOUT_S",
    "RedisClusterProcesses",
    "cluster_ports",
    "slot_ranges",
]

CLUSTER_SLOTS = 16_384
BUS_PORT_OFFSET = 10_000
START_ATTEMPTS_MAX = 5
FORM_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.05
NODE_TIMEOUT_MS = 5_000
MASTERS_MAX = 16


def slot_ranges(masters: int) -> list[range]:
    """The hash slots split into ``masters`` contiguous ranges, as even as they come."""
    if not 0 < masters <= MASTERS_MAX:
        raise ValueError(f"masters must be in [1, {MASTERS_MAX}]")
    bounds = [CLUSTER_SLOTS * i // masters for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def cluster_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` ports that, with their bus ports (+10,000), were free a moment ago."""
    low = _ephemeral_low()
    if low - BUS_PORT_OFFSET - LISTEN_PORTS_LOW < 1_000:
        raise OSError(f"no room for cluster and bus ports below the ephemeral range ({low})")
    draw = random.SystemRandom()
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(100 * count):
            if len(ports) == count:
                return ports
            port = draw.randrange(LISTEN_PORTS_LOW, low - BUS_PORT_OFFSET)
            pair = [socket.socket(), socket.socket()]
            try:
                pair[0].bind((host, port))
                pair[1].bind((host, port + BUS_PORT_OFFSET))
            except OSError:
                for sock in pair:
                    sock.close()
                continue
            sockets += pair
            ports.append(port)
        raise OSError(f"no {count} free cluster and bus ports on {host}")
    finally:
        for sock in sockets:
            sock.close()


class RedisClusterProcesses:
    """``masters`` cluster-enabled ``redis-server`` processes formed into one cluster."""

    def __init__(self, store_dir: str | Path, *, masters: int = 3) -> None:
        self.store_dir = Path(store_dir)
        self.ranges = slot_ranges(masters)
        self.nodes = [self._node(index, port) for index, port in enumerate(cluster_ports(masters))]

    def _node(self, index: int, port: int, attempt: int = 0) -> RedisServer:
        return RedisServer(
            self.store_dir / f"node-{index}-{attempt}",
            port=port,
            extra_args=(
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            ),
        )  # fmt: skip

    def _start_nodes(self) -> None:
        for index, node in enumerate(self.nodes):
            for attempt in range(START_ATTEMPTS_MAX):
                try:
                    node.start()
                    break
                except RuntimeError:  # exited at start: its port or bus port was taken
                    if attempt + 1 == START_ATTEMPTS_MAX:
                        raise
                    port = cluster_ports(1)[0]
                    node = self.nodes[index] = self._node(index, port, attempt + 1)

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        """Start the nodes, join them, assign the slots, wait for ``cluster_state:ok``."""
        import redis

        try:
            self._start_nodes()
            # Any: redis-py's execute_command is untyped.
            clients: list[Any] = [
                redis.Redis(host="127.0.0.1", port=node.port) for node in self.nodes
            ]
            try:
                first = self.nodes[0]
                for client in clients[1:]:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port)
                for client, slots in zip(clients, self.ranges, strict=True):
                    client.execute_command("CLUSTER", "ADDSLOTS", *slots)
                self._wait_formed(clients)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise

    def _wait_formed(self, clients: list[Any]) -> None:
        deadline = time.monotonic() + FORM_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(self._formed(client) for client in clients):
                return
            time.sleep(POLL_INTERVAL_S)
        raise TimeoutError(f"the Redis cluster did not form within {FORM_TIMEOUT_S} s")

    def _formed(self, client: Any) -> bool:
        text = client.execute_command("CLUSTER", "INFO")
        info = dict(
            line.split(":", 1)
            for line in (text.decode() if isinstance(text, bytes) else str(text)).splitlines()
            if ":" in line
        )
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_known_nodes") == str(len(self.nodes))
            and info.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        )

    def stop(self) -> None:
        """Stop every node (a no-op for nodes not running)."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
