"""A public Hypothesis contract for ``blocks.pubsub.api.PubSub`` implementations.

Subclass ``PubSubContract`` (a ``blocks.testing.contract.Contract``), implement
``make_subject()`` (async or not; time only from ``self.clock``, a ``ManualClock``; group
session timeout ``SESSION_TIMEOUT_MS``) and, for durable implementations,
``restart_subject(pubsub)``; expose ``TestCase``. ``make_pubsub(clock)`` and
``restart(pubsub, clock)`` are deprecated aliases. The model is a list of ``(key, value)``
per partition plus a dict of committed offsets and a dict of group members with their last
heartbeat.

Rules the model enforces:

* **topics**: creating a topic again with the same partition count is a no-op; with another
  count it raises a ``BlocksError``;
* **dense offsets**: ``produce`` returns ``(partition, offset)`` with the offset one past the
  partition's last record; ``produce_batch`` returns the base offset of its records, stored
  consecutively in order; an empty batch raises ``InvalidArgument``;
* **keys**: one key always maps to the same partition of a topic;
* **fetch**: ``fetch(topic, partition, offset, max_messages)`` returns exactly the records from
  ``offset`` on, at most ``max_messages``, with their offsets, keys and values, and
  non-decreasing timestamps; an offset at or past the end returns nothing;
* **groups**: a member that has not heartbeated for ``SESSION_TIMEOUT_MS`` is gone; its
  ``heartbeat`` and ``commit`` raise ``Conflict``; the live members' assignments cover every
  partition of the topic exactly once (an invariant after every step);
* **commits** are fenced by generation (a commit with an older generation raises
  ``Conflict``), and the committed offset of a partition never moves backwards (a lower
  commit leaves the higher one stored);
* **restart** (``restart_subject``) keeps every record and every commit; group membership is
  soft state and may be lost;
* **capabilities**: an implementation that sets ``declared_properties`` skips, by name, the
  rules of the properties it does not claim (join/heartbeat/leave: "group assignment";
  commit: "fenced commits"; reopen: "restart"; bad_input: "bad input");
* **bad input** changes nothing: an unknown topic raises ``NotFound``; a partition out of
  range, a negative fetch offset and a value that is not bytes raise ``InvalidArgument``.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule

from blocks.core.clock import ManualClock
from blocks.core.errors import BlocksError, Conflict, InvalidArgument, NotFound
from blocks.pubsub.api import PubSub
from blocks.testing.contract import Contract

__all__ = ["SESSION_TIMEOUT_MS", "PubSubContract"]

SESSION_TIMEOUT_MS = 10_000
TOPICS = {"events": 3, "single": 1}
keys = st.one_of(st.none(), st.sampled_from([b"a", b"b", b"c", b"d", b"e"]))
values = st.binary(max_size=6)
topics = st.sampled_from(sorted(TOPICS))
members = st.sampled_from(["m1", "m2", "m3"])


class PubSubContract(Contract[PubSub]):
    """Checks a ``PubSub`` implementation against lists and dicts."""

    properties = (
        "dense offsets",
        "key affinity",
        "fetch order",
        "group assignment",
        "fenced commits",
        "restart",
        "bad input",
    )
    legacy_hooks = {"make_pubsub": "make_subject", "restart": "restart_subject"}

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(wall_ms=5_000_000)
        self.log: dict[str, list[list[tuple[bytes | None, bytes]]]] = {
            t: [[] for _ in range(n)] for t, n in TOPICS.items()
        }
        self.key_partition: dict[tuple[str, bytes], int] = {}
        self.committed: dict[int, int] = {}  # group "g" on "events"
        self.members: dict[str, int] = {}  # member -> last heartbeat ms
        self.generations: dict[str, int] = {}
        self.pubsub: PubSub | None = None

    async def make_subject(self) -> PubSub:
        return await self.make_pubsub(self.clock)

    async def restart_subject(self, pubsub: PubSub) -> PubSub | None:
        """Close and reopen a durable implementation; None (the default) skips restarts."""
        return await self.restart(pubsub, self.clock)

    async def make_pubsub(self, clock: ManualClock) -> PubSub:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    async def restart(self, pubsub: PubSub, clock: ManualClock) -> PubSub | None:
        """Deprecated alias of ``restart_subject``."""
        return None

    @property
    def p(self) -> PubSub:
        assert self.pubsub is not None
        return self.pubsub

    def teardown(self) -> None:
        self.finish_subject(self.pubsub)

    def _expire(self) -> None:
        now = self.clock.now_ms()
        for member, seen in list(self.members.items()):
            if now - seen >= SESSION_TIMEOUT_MS:
                del self.members[member]

    @initialize()
    def build(self) -> None:
        self.pubsub = self.open_subject()
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
    @precondition(lambda self: self.supports("group assignment"))
    def join(self, member: str) -> None:
        assignment = self.run(self.p.join_group("g", "events", member))
        self._expire()
        self.members[member] = self.clock.now_ms()
        self.generations[member] = assignment.generation

    @rule(member=members)
    @precondition(lambda self: self.supports("group assignment"))
    def heartbeat(self, member: str) -> None:
        self._expire()
        if member not in self.members:
            self.expect(self.p.heartbeat("g", member), Conflict)
            return
        assignment = self.run(self.p.heartbeat("g", member))
        self.members[member] = self.clock.now_ms()
        self.generations[member] = assignment.generation

    @rule(member=members)
    @precondition(lambda self: self.supports("group assignment"))
    def leave(self, member: str) -> None:
        self.run(self.p.leave_group("g", member))
        self._expire()
        self.members.pop(member, None)

    @rule(member=members, data=st.data())
    @precondition(lambda self: self.supports("fenced commits"))
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
    @precondition(lambda self: self.supports("restart"))
    def reopen(self) -> None:
        reopened = self.reopen_subject(self.p)
        if reopened is not None:
            self.pubsub = reopened
            self.members.clear()  # group membership is soft state

    @rule(value=values)
    @precondition(lambda self: self.supports("bad input"))
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
