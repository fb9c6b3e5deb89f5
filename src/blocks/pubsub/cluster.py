"""``ClusterBroker``: a broker that replicates its partitions to its peers.

Theory of operation
-------------------
A ``LocalBroker`` (topics, stores, producer table, consumer groups) whose partitions are run
by ``blocks.pubsub.replication.Replication``: each partition has a leader and followers among
the cluster's brokers, and the leader acknowledges a produce only when every in-sync replica
(and a majority) holds it (``acks=all``). Any broker accepts any call:

* partition calls (``produce_batch``, ``fetch``, ``end_offsets``, ``offset_for_time``) are
  served by the partition's leader; another broker forwards them there over the transport,
  waiting out an election (up to ``leader_wait_ms``) when the leader is unknown or
  unreachable, then failing with ``Unavailable`` so the client retries;
* consumers read only committed records (below the high watermark), so a record a consumer
  has seen can never be taken back by a leader change; control records (epoch markers and
  hollow compacted records) take offsets but are never returned, so offsets have gaps where
  leaders changed;
* ``create_topic`` is sent to every peer; a peer that misses it learns the topic from the
  first replication message, or asks its peers when a client names a topic it does not know.

Consumer groups and committed offsets are kept by the broker the consumer talks to and are
not replicated: after that broker fails, a group starts again from the earliest records
(still at-least-once, with more redelivery). Nothing here waits without a bound: forwarding,
acknowledgements and leader waits all have deadlines.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blocks.core.clock import Clock, SystemClock
from blocks.core.errors import (
    BlocksError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PeerError,
    Timeout,
    Unavailable,
)
from blocks.core.log import FsyncPolicy
from blocks.core.transport import Transport
from blocks.pubsub.api import Record
from blocks.pubsub.local import FETCH_MAX_BYTES, LocalBroker
from blocks.pubsub.partition import first_offset_at
from blocks.pubsub.replica import Role
from blocks.pubsub.replica_messages import FetchRequest, decode
from blocks.pubsub.replication import Replication, ReplicationConfig
from blocks.pubsub.topics import TopicConfig, check_entries, check_fetch

__all__ = ["ClusterBroker", "ReplicationConfig"]

HOPS_MAX = 2  # a forwarded call may be forwarded once more (by a non-replica)


class ClusterBroker(LocalBroker):
    """A replicated broker; call ``start()`` after building it, ``close()`` at the end.

    ``clock`` stamps records and times group sessions; ``replication_clock`` (default: the
    same) times elections and the ISR."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None,
        transport: Transport,
        nodes: Sequence[str],
        *,
        clock: Clock | None = None,
        replication_clock: Clock | None = None,
        rng: random.Random | None = None,
        fsync: FsyncPolicy = "batch",
        replication: ReplicationConfig | None = None,
        leader_wait_ms: int = 5_000,
        session_timeout_ms: int = 10_000,
        segment_bytes_max: int = 16 << 20,
    ) -> None:
        clock = clock if clock is not None else SystemClock()
        super().__init__(
            directory,
            clock=clock,
            fsync=fsync,
            session_timeout_ms=session_timeout_ms,
            segment_bytes_max=segment_bytes_max,
        )
        self.transport = transport
        self._leader_wait_ms = leader_wait_ms
        self.replication = Replication(
            self.topics,
            transport,
            list(nodes),
            replication_clock if replication_clock is not None else clock,
            rng if rng is not None else random.Random(),
            replication if replication is not None else ReplicationConfig(),
            None if directory is None else Path(directory) / "replicas",
            self._wake,
            self._before_log_restart,
        )
        transport.serve(self.handle)

    async def _before_log_restart(self, key: tuple[str, int], leader: str, start: int) -> None:
        """Called before a follower below its leader's log start drops its log and starts
        it empty at ``start``; a subclass installs what stands for the missing records."""

    @property
    def node(self) -> str:
        return self.replication.node

    def start(self) -> None:
        self.replication.start()

    async def close(self) -> None:
        await self.replication.close()
        await super().close()

    def describe(self, topic: str, partition: int) -> dict[str, object]:
        """This broker's view of a partition's replication (role, epoch, leader, ISR, ...)."""
        replica = self.replication.replicas.get((topic, partition))
        return {} if replica is None else replica.describe()

    # -- topics -------------------------------------------------------------------------------

    async def _create_topic(self, config: TopicConfig) -> None:
        """Create it here, then tell every peer (one that missed it asks its peers to
        ``describe`` the topic when first called for it)."""
        self._check_open()
        await self._create_local(config)
        message = {"op": "create", "cfg": asdict(config)}
        peers = [n for n in self.replication.nodes if n != self.node]
        await asyncio.gather(
            *(self.transport.request(p, message, timeout_s=2.0) for p in peers),
            return_exceptions=True,
        )

    async def _create_local(self, config: TopicConfig) -> None:
        self.topics.create(config)
        self.replication.open_topic(config, fresh=True)
        for partition in range(config.partitions):
            if (config.name, partition) in self.replication.replicas:
                await self.replication.settle((config.name, partition))

    def compaction_limit(self, topic: str, partition: int) -> int | None:
        """Only committed records supersede: an uncommitted one may still be truncated."""
        replica = self.replication.replicas.get((topic, partition))
        return 0 if replica is None else replica.hw

    def apply_retention(self) -> int:
        """Retention as ``LocalBroker``'s; the replicas learn their new log starts (a follower
        fetching below one is answered ``behind``)."""
        trimmed = super().apply_retention()
        for key, replica in self.replication.replicas.items():
            replica.log_start = max(replica.log_start, self.topics.store(*key).first_offset)
        return trimmed

    async def delete_topic(self, name: str) -> None:
        raise FailedPrecondition("a replicated broker does not delete topics")

    async def partitions(self, topic: str) -> int:
        await self._known_topic(topic)
        return self.topics.topic(topic).config.partitions

    async def _known_topic(self, topic: str) -> None:
        """Make sure the topic is known here, asking the peers if it is not."""
        try:
            self.topics.topic(topic)
            return
        except NotFound:
            pass
        for peer in self.replication.nodes:
            if peer == self.node:
                continue
            try:
                wire = await self.transport.request(peer, {"op": "describe", "t": topic}, 1.0)
            except BlocksError:
                continue
            if wire is not None:
                await self._create_local(_config_from_wire(wire))
                return
        raise NotFound(f"no topic named {topic!r}")

    # -- partition calls ------------------------------------------------------------------------

    async def _leader_of(self, topic: str, partition: int, hops: int) -> str | None:
        """None when this broker leads the partition, else the broker to forward to."""
        await self._known_topic(topic)
        self.topics.store(topic, partition)  # checks the partition number
        key = (topic, partition)
        if hops > HOPS_MAX:
            raise Unavailable("the partition's leader moved while forwarding; retry")
        replica = self.replication.replicas.get(key)
        deadline = self._clock.monotonic() + self._leader_wait_ms / 1000.0
        while (remaining_s := deadline - self._clock.monotonic()) > 0:
            if replica is None:
                return self.replication.placement(topic, partition)[0]
            if replica.role is Role.LEADER:
                return None
            if replica.role is Role.FOLLOWER and replica.leader is not None:
                return replica.leader
            await self.replication.wait_role_change(key, remaining_s)  # an election's end
        raise Unavailable(f"no leader for {topic}/{partition} yet; retry")

    async def _forward(self, leader: str, message: dict[str, Any]) -> Any:
        try:
            return await self.transport.request(leader, message, timeout_s=12.0)
        except Timeout:
            raise
        except (Unavailable, PeerError) as error:
            raise Unavailable(f"the partition's leader {leader} is unreachable: {error}") from None

    async def produce_batch(
        self,
        topic: str,
        partition: int,
        entries: list[tuple[bytes | None, bytes]],
        *,
        producer_id: str | None = None,
        sequence: int = 0,
        hops: int = 0,
    ) -> int:
        self._check_open()
        check_entries(entries)
        leader = await self._leader_of(topic, partition, hops)
        if leader is not None:
            message = {"op": "produce", "t": topic, "p": partition, "hops": hops + 1}
            message.update(entries=[list(e) for e in entries], pid=producer_id, seq=sequence)
            return int(await self._forward(leader, message))
        key = (topic, partition)
        replica = self.replication.replicas[key]
        epoch = replica.epoch
        records, base = self.topics.prepare_append(
            topic, partition, entries, self._clock.now_ms(), producer_id, sequence, epoch
        )
        if records:
            await self.replication.append(key, records)
            await self.replication.settle(key)
        await self.replication.wait_committed(key, base + len(entries), epoch)
        return base

    async def _fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        max_messages: int,
        wait_ms: int,
        hops: int = 0,
    ) -> list[Record]:
        self._check_open()
        check_fetch(offset, max_messages, wait_ms)
        leader = await self._leader_of(topic, partition, hops)
        if leader is not None:
            message = {"op": "fetch", "t": topic, "p": partition, "hops": hops + 1}
            message.update(offset=offset, max=max_messages, wait=wait_ms)
            rows = await self._forward(leader, message)
            return [Record(topic, partition, *row) for row in rows]
        found = self._committed(topic, partition, offset, max_messages)
        if not found and wait_ms > 0:
            await self._long_polls.wait((topic, partition), wait_ms / 1000.0)
            found = self._committed(topic, partition, offset, max_messages)
        return found

    def _committed(self, topic: str, partition: int, offset: int, limit: int) -> list[Record]:
        high_watermark = self.replication.replicas[(topic, partition)].hw
        store = self.topics.store(topic, partition)
        found = store.read(offset, limit, FETCH_MAX_BYTES)
        return [
            Record(topic, partition, r.offset, r.key, r.value, r.timestamp_ms)
            for r in found
            if r.offset < high_watermark
        ]

    async def end_offsets(self, topic: str, partition: int, *, hops: int = 0) -> tuple[int, int]:
        leader = await self._leader_of(topic, partition, hops)
        if leader is not None:
            message = {"op": "end_offsets", "t": topic, "p": partition, "hops": hops + 1}
            first, end = await self._forward(leader, message)
            return int(first), int(end)
        store = self.topics.store(topic, partition)
        return store.first_offset, self.replication.replicas[(topic, partition)].hw

    async def offset_for_time(
        self, topic: str, partition: int, timestamp_ms: int, *, hops: int = 0
    ) -> int:
        leader = await self._leader_of(topic, partition, hops)
        if leader is not None:
            message = {"op": "offset_for_time", "t": topic, "p": partition, "hops": hops + 1}
            message["ts"] = timestamp_ms
            return int(await self._forward(leader, message))
        found = first_offset_at(self.topics.store(topic, partition), timestamp_ms)
        return min(found, self.replication.replicas[(topic, partition)].hw)

    # -- the transport handler ------------------------------------------------------------------

    async def handle(self, source: str, message: Any) -> Any:
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise PeerError("a broker message is a dict with an op")
        op = message["op"]
        try:
            if op in ("replica", "replica_fetch", "create"):
                config = _config_from_wire(message.get("cfg"))
                if config.name not in self.topics.names():
                    await self._create_local(config)
                if op == "create":
                    return None
                key = (config.name, _int(message.get("p")))
                body = decode(message.get("m"))
                if op == "replica":
                    return await self.replication.handle_message(source, key, body)
                if not isinstance(body, FetchRequest):
                    raise PeerError("replica_fetch carries a FetchRequest")
                return await self.replication.handle_fetch(source, key, body)
            return await self._handle_client_op(op, message)
        except BlocksError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise PeerError(f"malformed {op} message: {error}") from None

    async def _handle_client_op(self, op: str, message: dict[str, Any]) -> Any:
        if op == "describe":
            try:
                return asdict(self.topics.topic(message["t"]).config)
            except NotFound:
                return None
        topic, partition, hops = message["t"], _int(message["p"]), _int(message["hops"])
        if op == "produce":
            entries = [(key, value) for key, value in message["entries"]]
            return await self.produce_batch(
                topic,
                partition,
                entries,
                producer_id=message["pid"],
                sequence=message["seq"],
                hops=hops,
            )
        if op == "fetch":
            records = await self._fetch(
                topic, partition, message["offset"], message["max"], message["wait"], hops
            )
            return [[r.offset, r.key, r.value, r.timestamp_ms] for r in records]
        if op == "end_offsets":
            return list(await self.end_offsets(topic, partition, hops=hops))
        if op == "offset_for_time":
            return await self.offset_for_time(topic, partition, message["ts"], hops=hops)
        raise PeerError(f"unknown op {op!r}")


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise PeerError("expected a non-negative integer")
    return value


def _config_from_wire(wire: Any) -> TopicConfig:
    if not isinstance(wire, dict):
        raise PeerError("a topic configuration is a dict")
    try:
        return TopicConfig(**wire)
    except (TypeError, InvalidArgument) as error:
        raise PeerError(f"bad topic configuration: {error}") from None
