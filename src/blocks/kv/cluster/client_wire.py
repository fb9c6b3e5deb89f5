"""Client requests to a kv node over the data path, and their replies, as msgpack lists.

A client (or a node forwarding a put) sends ``Transport.request(node, [verb, ...])``:

=============================================================  ===============================
``["put", key, value|nil, context|nil, w|nil, timeout|nil, hops]``  ``[object, coordinator]``
``["get", key, r|nil, timeout|nil]``                                  ``object|nil``
``["members"]``                                                       ``{"nodes", "replicas", "vnodes"}``
``["status"]``                                                        a dict (see ``KVNode.status``)
``["keys", limit]``                                                   ``[key, ...]`` live locally
=============================================================  ===============================

``keys`` lists the keys this node holds with at least one live sibling (tombstones left out),
in byte order, at most ``limit``.

A ``nil`` value deletes; a ``nil`` context means "supersede what the coordinator holds".
Everything is validated here before a node acts on it: a malformed request raises
``InvalidArgument`` (sent back to the caller by the transport) and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from blocks.core.errors import InvalidArgument, PeerError
from blocks.kv.cluster.versions import (
    Dot,
    VersionedObject,
    VersionVector,
    decode_context,
    object_from_wire,
)
from blocks.kv.limits import check_key, check_value

__all__ = [
    "KEYS_LIMIT_MAX",
    "GetRequest",
    "PutRequest",
    "PutResult",
    "check_quorum",
    "check_timeout_s",
    "parse_address",
    "parse_get",
    "parse_keys_limit",
    "parse_put",
    "parse_put_reply",
]

KEYS_LIMIT_MAX = 100_000
HOPS_MAX = 1
"""A put is forwarded at most once (to a home node), so stale routing cannot loop."""


@dataclass(frozen=True, slots=True)
class PutRequest:
    key: bytes
    value: bytes | None
    context: VersionVector | None
    write_quorum: int | None
    timeout_s: float | None
    hops: int


@dataclass(frozen=True, slots=True)
class GetRequest:
    key: bytes
    read_quorum: int | None
    timeout_s: float | None


def check_quorum(value: Any, replicas: int, name: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= replicas:
        raise InvalidArgument(f"{name} must be an int in [1, {replicas}], got {value!r}")
    return int(value)


def check_timeout_s(value: Any) -> float | None:
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 < value <= 3600
    ):
        raise InvalidArgument(f"timeout must be a number of seconds in (0, 3600], got {value!r}")
    return float(value)


def _arity(raw: list[Any], count: int) -> None:
    if len(raw) != count:
        raise InvalidArgument(f"{raw[0]!r} takes {count - 1} fields, got {len(raw) - 1}")


def parse_put(raw: list[Any], replicas: int, value_bytes_max: int) -> PutRequest:
    _arity(raw, 7)
    _, key, value, context, w, timeout_s, hops = raw
    if context is not None and not isinstance(context, bytes):
        raise InvalidArgument("context must be bytes or nil")
    if type(hops) is not int or not 0 <= hops <= HOPS_MAX:
        raise InvalidArgument(f"hops must be an int in [0, {HOPS_MAX}]")
    return PutRequest(
        check_key(key),
        None if value is None else check_value(value, value_bytes_max),
        None if context is None else decode_context(context),
        check_quorum(w, replicas, "w"),
        check_timeout_s(timeout_s),
        hops,
    )


def parse_get(raw: list[Any], replicas: int) -> GetRequest:
    _arity(raw, 4)
    _, key, r, timeout_s = raw
    return GetRequest(check_key(key), check_quorum(r, replicas, "r"), check_timeout_s(timeout_s))


def parse_keys_limit(raw: list[Any]) -> int:
    _arity(raw, 2)
    limit = raw[1]
    if type(limit) is not int or not 1 <= limit <= KEYS_LIMIT_MAX:
        raise InvalidArgument(f"limit must be an int in [1, {KEYS_LIMIT_MAX}]")
    return int(limit)


@dataclass(frozen=True, slots=True)
class PutResult:
    """The object a put produced, the node that coordinated it, and the new write's dot."""

    obj: VersionedObject
    coordinator: str

    @property
    def dot(self) -> Dot:
        return Dot(self.coordinator, self.obj.context.get(self.coordinator))


def parse_put_reply(reply: Any) -> PutResult:
    """Parse ``[object, coordinator]``; ``PeerError`` if malformed."""
    if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], str):
        raise PeerError("put reply must be [object, coordinator]")
    return PutResult(object_from_wire(reply[0]), reply[1])


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` as a tuple; ``InvalidArgument`` otherwise."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise InvalidArgument(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)
