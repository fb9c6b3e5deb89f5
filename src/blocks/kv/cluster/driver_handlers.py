"""What a ``KVNode`` answers to clients: request dispatch, put forwarding and status reports.

Theory of operation. A client request arrives over the transport as a list whose first
element is a verb (``blocks.kv.cluster.client_wire`` parses and validates each one, raising
``InvalidArgument`` for bad input before anything changes). ``put`` and ``get`` become the
node's own ``put``/``get``; ``members``, ``status`` and ``keys`` are read-only reports. A put
that reaches a node which is not one of the key's replicas (the sender's ring view was stale)
is forwarded once, with ``hops`` 1, to the first replica the node knows: a second forward is
refused, so two stale views cannot bounce a write between them.

These functions read the node's public state only; they hold no state of their own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from blocks.core.errors import InvalidArgument
from blocks.core.net import TcpTransport
from blocks.core.transport import Transport
from blocks.kv.cluster.client_wire import (
    PutResult,
    parse_get,
    parse_keys_limit,
    parse_put,
    parse_put_reply,
)
from blocks.kv.cluster.driver_config import NodeConfig
from blocks.kv.cluster.driver_io import StorageHealth
from blocks.kv.cluster.membership import Membership
from blocks.kv.cluster.node import KVNodeCore
from blocks.kv.cluster.versions import (
    VersionedObject,
    VersionVector,
    encode_context,
    object_to_wire,
)

__all__ = [
    "ServedNode",
    "answer_client_request",
    "forward_put",
    "members_report",
    "status_report",
]


class ServedNode(Protocol):
    """What these functions use of a node (``KVNode`` is the one): stated here so that this
    module need not import ``driver.py``, which imports it."""

    @property
    def node_id(self) -> str: ...
    @property
    def config(self) -> NodeConfig: ...
    @property
    def core(self) -> KVNodeCore: ...
    @property
    def membership(self) -> Membership: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def storage(self) -> StorageHealth: ...
    @property
    def counters(self) -> Counter[str]: ...
    @property
    def requests_in_flight(self) -> int: ...

    async def put(
        self,
        key: bytes,
        value: bytes | None,
        context: VersionVector | None = None,
        *,
        write_quorum: int | None = None,
        timeout_s: float | None = None,
        hops: int = 0,
    ) -> PutResult: ...

    async def get(
        self, key: bytes, *, read_quorum: int | None = None, timeout_s: float | None = None
    ) -> VersionedObject | None: ...


async def answer_client_request(node: ServedNode, raw: list[Any]) -> Any:
    """Serve one client request ``[verb, ...]``; ``InvalidArgument`` for anything malformed."""
    replicas = node.config.quorum.replicas
    verb = raw[0]
    if verb == "put":
        put = parse_put(raw, replicas, node.config.value_bytes_max)
        result = await node.put(
            put.key,
            put.value,
            put.context,
            write_quorum=put.write_quorum,
            timeout_s=put.timeout_s,
            hops=put.hops,
        )
        return [object_to_wire(result.obj), result.coordinator]
    if verb == "get":
        get = parse_get(raw, replicas)
        obj = await node.get(get.key, read_quorum=get.read_quorum, timeout_s=get.timeout_s)
        return None if obj is None else object_to_wire(obj)
    if verb == "members" and len(raw) == 1:
        return members_report(node)
    if verb == "status" and len(raw) == 1:
        return status_report(node)
    if verb == "keys":  # live ones only: a key deleted everywhere costs a client nothing
        live = (key for key, obj in node.core.objects.items() if obj.values)
        return sorted(live)[: parse_keys_limit(raw)]
    raise InvalidArgument(f"unknown request {verb!r}")


async def forward_put(
    node: ServedNode,
    owner: str,
    key: bytes,
    value: bytes | None,
    context: VersionVector | None,
    write_quorum: int | None,
    timeout_s: float | None,
) -> PutResult:
    """Send a put this node cannot coordinate to ``owner``, marked as already forwarded."""
    node.counters["forwarded"] += 1
    wire_context = None if context is None else encode_context(context)
    request = ["put", key, value, wire_context, write_quorum, timeout_s, 1]
    reply = await node.transport.request(
        owner, request, timeout_s or node.config.quorum.timeout_s * 2
    )
    return parse_put_reply(reply)


def members_report(node: ServedNode) -> dict[str, Any]:
    """Names, addresses and health as this node sees them, plus what a client needs to build
    the same ring (N and virtual nodes)."""
    healthy = node.membership.healthy()
    nodes = [[n, a, n in healthy] for n, a in sorted(node.membership.addresses().items())]
    return {"nodes": nodes, "replicas": node.config.quorum.replicas, "vnodes": node.config.vnodes}


def status_report(node: ServedNode) -> dict[str, Any]:
    """This node's view: ring members and their health, keys held, whether its store takes
    writes (``storage``: ok, full or failed), hints owed, counters (with the data path's own,
    limit breaches included, under ``transport``)."""
    healthy = node.membership.healthy()
    transport = node.transport.stats() if isinstance(node.transport, TcpTransport) else {}
    return {
        "node": node.node_id,
        "members": {
            n: ("healthy" if n in healthy else "unreachable")
            for n in node.membership.ring_members()
        },
        "keys": len(node.core.objects),
        "storage": node.storage.state,
        "hints_pending": len(node.core.hints),
        "requests_in_flight": node.requests_in_flight,
        "counters": {
            **node.counters,
            "anti_entropy_repairs": node.core.anti_entropy_repairs,
            "hints_refused": node.core.hints_refused,
        },
        "transport": transport,
    }
