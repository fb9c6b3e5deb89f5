"""The pub-sub data path: ``Produce`` and ``Fetch`` as framed msgpack over ``TcpTransport``.

Theory of operation
-------------------
gRPC stays the public, language-neutral API of a broker. But a unary gRPC call costs the
Python client and server about ten times what one pipelined frame of the core transport
costs (``docs/core.md``, "why the data path is framed msgpack"), and a producer keeps several
batches in flight per partition. So every broker also listens on a ``TcpTransport`` (its port
is told by the ``DataPath`` RPC), and the Python client sends its produce batches and fetches
there; everything else stays on gRPC.

Requests are msgpack maps; replies are plain values:

``{"op": "produce", "t": topic, "p": partition, "e": [[key|None, value], ...], "pid":
producer_id|None, "seq": sequence}``
    The batch's first offset, once acknowledged (``LocalBroker.produce_batch``).
``{"op": "fetch", "t": topic, "p": partition, "o": offset, "n": max_messages, "w": wait_ms}``
    ``[[offset, key|None, value, timestamp_ms], ...]``.

Anything else, or a field of the wrong type, is ``InvalidArgument`` with nothing done; the
broker's own checks (sizes, names, sequences) apply as on gRPC. The transport authenticates
the same bearer token as the gRPC server and bounds frames and requests in flight.
"""

from __future__ import annotations

from typing import Any

from blocks.core.errors import InvalidArgument
from blocks.pubsub.api import Record
from blocks.pubsub.local import LocalBroker

__all__ = ["DataPathHandler", "fetch_message", "produce_message", "records_from_wire"]


def produce_message(
    topic: str,
    partition: int,
    entries: list[tuple[bytes | None, bytes]],
    producer_id: str | None,
    sequence: int,
) -> dict[str, Any]:
    return {
        "op": "produce",
        "t": topic,
        "p": partition,
        "e": entries,
        "pid": producer_id,
        "seq": sequence,
    }


def fetch_message(
    topic: str, partition: int, offset: int, max_messages: int, wait_ms: int
) -> dict[str, Any]:
    return {"op": "fetch", "t": topic, "p": partition, "o": offset, "n": max_messages, "w": wait_ms}


def records_from_wire(topic: str, partition: int, wire: Any) -> list[Record]:
    """Records from a fetch reply (``InvalidArgument`` if it is not one)."""
    if not isinstance(wire, list):
        raise InvalidArgument("a fetch reply is a list of records")
    records = []
    for item in wire:
        if not isinstance(item, list) or len(item) != 4:
            raise InvalidArgument("a fetched record is [offset, key, value, timestamp_ms]")
        offset, key, value, timestamp_ms = item
        records.append(Record(topic, partition, offset, key, value, timestamp_ms))
    return records


def _field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidArgument(f"data path field {name!r} is missing or of the wrong type")
    return value


def _entries(wire: Any) -> list[tuple[bytes | None, bytes]]:
    if not isinstance(wire, list):
        raise InvalidArgument("produce entries must be a list of [key, value]")
    entries: list[tuple[bytes | None, bytes]] = []
    for entry in wire:
        if not isinstance(entry, list) or len(entry) != 2:
            raise InvalidArgument("a produce entry is [key or None, value]")
        key, value = entry
        if not isinstance(value, bytes) or not (key is None or isinstance(key, bytes)):
            raise InvalidArgument("record keys and values must be bytes")
        entries.append((key, value))
    return entries


class DataPathHandler:
    """The ``TcpTransport`` handler of a broker's data path (see module docs)."""

    def __init__(self, broker: LocalBroker) -> None:
        self.broker = broker

    async def __call__(self, source: str, message: Any) -> Any:
        if not isinstance(message, dict):
            raise InvalidArgument("a data path request is a map")
        op = message.get("op")
        topic = _field(message, "t", str)
        partition = _field(message, "p", int)
        if op == "produce":
            producer_id = message.get("pid")
            if producer_id is not None and not isinstance(producer_id, str):
                raise InvalidArgument("producer id must be a string or None")
            return await self.broker.produce_batch(
                topic,
                partition,
                _entries(message.get("e")),
                producer_id=producer_id,
                sequence=_field(message, "seq", int),
            )
        if op == "fetch":
            records = await self.broker.fetch(
                topic,
                partition,
                _field(message, "o", int),
                _field(message, "n", int),
                _field(message, "w", int),
            )
            return [[r.offset, r.key, r.value, r.timestamp_ms] for r in records]
        raise InvalidArgument(f"unknown data path op {op!r}")
