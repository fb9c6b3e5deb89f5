"""A public Hypothesis contract for ``blocks.pubsub.api.PubSub`` implementations.

Subclass ``PubSubContract``, implement ``make_pubsub(clock)`` (time only from the given
``ManualClock``, group session timeout ``SESSION_TIMEOUT_MS``) and, for durable
implementations, ``restart(pubsub, clock)``; expose ``TestCase``. The model is a list of
``(key, value)`` per partition plus a dict of committed offsets and a dict of group members
with their last heartbeat. Checked: offsets are dense and returned once acknowledged; fetches
return exactly the model's records in order with non-decreasing timestamps; one key always
maps to one partition; the live members' assignments partition the topic exactly; commits are
fenced and never move backwards; bad input raises and changes nothing; a restart loses
nothing acknowledged or committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from blocks.core.clock import ManualClock
from blocks.core.errors import BlocksError, Conflict, InvalidArgument, NotFound
from blocks.pubsub.api import PubSub

__all__ = ["SESSION_TIMEOUT_MS", "PubSubContract"]

T = TypeVar("T")
SESSION_TIMEOUT_MS = 10_000
TOPICS = {"events": 3, "single": 1}
keys = st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d", b"e"]))
values = st.binary(max_size=6)
topics = st.sampled_from(sorted(TOPICS))
members = st.sampled_from(["m1", "m2", "m3"])


class PubSubContract(RuleBasedStateMachine):
    """Checks a ``PubSub`` implementation against lists and dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock(wall_ms=5_000_000)
        self.log: dict[str, list[list[tuple[bytes | None, bytes]]]] = {
            t: [[] for _ in range(n)] for t, n in TOPICS.items()
        }
        self.key_partition: dict[tuple[str, bytes], int] = {}
        self.committed: dict[int, int] = {}  # group "g" on "events"
        self.members: dict[str, int] = {}  # member -> last heartbeat ms
        self.generations: dict[str, int] = {}
        self.pubsub: PubSub | None = None

    async def make_pubsub(self, clock: ManualClock) -> PubSub:
        raise NotImplementedError("subclasses build the implementation under test")

    async def restart(self, pubsub: PubSub, clock: ManualClock) -> PubSub | None:
        """Close and reopen a durable implementation; None (the default) skips restarts."""
        return None

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def expect(self, coroutine: Coroutine[Any, Any, Any], error: type[BlocksError]) -> None:
        try:
            self.run(coroutine)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    @property
    def p(self) -> PubSub:
        assert self.pubsub is not None
        return self.pubsub

    def teardown(self) -> None:
        try:
            if self.pubsub is not None:
                self.run(self.pubsub.close())
        finally:
            self.loop.close()

    def _expire(self) -> None:
        now = self.clock.now_ms()
        for member, seen in list(self.members.items()):
            if now - seen >= SESSION_TIMEOUT_MS:
                del self.members[member]

    @initialize()
    def build(self) -> None:
        self.pubsub = self.run(self.make_pubsub(self.clock))
        for topic, count in TOPICS.items():
            self.run(self.p.create_topic(topic, partitions=count))
            self.run(self.p.create_topic(topic, partitions=count))  # same again: a no-op

    @rule(topic=topics, key=keys, value=values)
    def produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        partition, offset = self.run(self.p.produce(topic, value, key=key))
        assert 0 <= partition < TOPICS[topic]
        if key is not None:
            assert self.key_partition.setdefault((topic, key), partition) == partition
        assert offset == len(self.log[topic][partition]), "offsets must be dense"
        self.log[topic][partition].append((key, value))

    @rule(topic=topics, data=st.data(), batch=st.lists(st.tuples(st.none(), values), max_size=4))
    def produce_batch(self, topic: str, data: Any, batch: list[tuple[bytes | None, bytes]]) -> None:
        partition = data.draw(st.integers(0, TOPICS[topic] - 1))
        if not batch:
            self.expect(self.p.produce_batch(topic, partition, batch), InvalidArgument)
            return
        base = self.run(self.p.produce_batch(topic, partition, list(batch)))
        assert base == len(self.log[topic][partition])
        self.log[topic][partition].extend(batch)

    @rule(topic=topics, data=st.data(), max_messages=st.integers(1, 5))
    def fetch(self, topic: str, data: Any, max_messages: int) -> None:
        partition = data.draw(st.integers(0, TOPICS[topic] - 1))
        records = self.log[topic][partition]
        offset = data.draw(st.integers(0, len(records) + 1))
        got = self.run(self.p.fetch(topic, partition, offset, max_messages))
        expected = records[offset : offset + max_messages]
        assert [(r.offset, r.key, r.value) for r in got] == [
            (offset + i, k, v) for i, (k, v) in enumerate(expected)
        ]
        stamps = [r.timestamp_ms for r in got]
        assert stamps == sorted(stamps)

    @rule(member=members)
    def join(self, member: str) -> None:
        assignment = self.run(self.p.join_group("g", "events", member))
        self._expire()
        self.members[member] = self.clock.now_ms()
        self.generations[member] = assignment.generation

    @rule(member=members)
    def heartbeat(self, member: str) -> None:
        self._expire()
        if member not in self.members:
            self.expect(self.p.heartbeat("g", member), Conflict)
            return
        assignment = self.run(self.p.heartbeat("g", member))
        self.members[member] = self.clock.now_ms()
        self.generations[member] = assignment.generation

    @rule(member=members)
    def leave(self, member: str) -> None:
        self.run(self.p.leave_group("g", member))
        self._expire()
        self.members.pop(member, None)

    @rule(member=members, data=st.data())
    def commit(self, member: str, data: Any) -> None:
        self._expire()
        if member not in self.members:
            self.expect(self.p.commit("g", member, 0, 0, 0), Conflict)
            return
        assignment = self.run(self.p.heartbeat("g", member))
        self.members[member] = self.clock.now_ms()
        if not assignment.partitions:
            return
        partition = data.draw(st.sampled_from(assignment.partitions))
        offset = data.draw(st.integers(0, len(self.log["events"][partition])))
        if assignment.generation > 1:
            stale = self.p.commit("g", member, assignment.generation - 1, partition, offset)
            self.expect(stale, Conflict)
        stored = self.run(self.p.commit("g", member, assignment.generation, partition, offset))
        self.committed[partition] = max(self.committed.get(partition, 0), offset)
        assert stored == self.committed[partition], "committed offsets never move backwards"

    @rule(ms=st.sampled_from([10, 3_000, 11_000]))
    def pass_time(self, ms: int) -> None:
        self.clock.advance(ms=ms)

    @rule()
    def reopen(self) -> None:
        reopened = self.run(self.restart(self.p, self.clock))
        if reopened is not None:
            self.pubsub = reopened
            self.members.clear()  # group membership is soft state

    @rule(value=values)
    def bad_input(self, value: bytes) -> None:
        self.expect(self.p.produce("no-such-topic", value), NotFound)
        self.expect(self.p.produce_batch("events", 99, [(None, value)]), InvalidArgument)
        self.expect(self.p.fetch("events", 0, -1), InvalidArgument)
        self.expect(self.p.produce("events", "text"), InvalidArgument)  # type: ignore[arg-type]
        self.expect(self.p.create_topic("events", partitions=5), BlocksError)

    @invariant()
    def assignments_partition_the_topic(self) -> None:
        if self.pubsub is None:
            return
        self._expire()
        seen: list[int] = []
        for member in sorted(self.members):
            assignment = self.run(self.p.heartbeat("g", member))
            self.members[member] = self.clock.now_ms()
            seen.extend(assignment.partitions)
        if self.members:
            assert sorted(seen) == list(range(TOPICS["events"])), seen
        for partition, offset in self.committed.items():
            assert self.run(self.p.committed("g", "events", partition)) == offset
