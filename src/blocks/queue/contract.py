"""A public Hypothesis contract for ``blocks.queue.api.Queue`` implementations.

Subclass ``QueueContract`` (a ``blocks.testing.contract.Contract``), implement
``make_subject()`` (async or not; the implementation must read time only from
``self.clock``, a ``ManualClock``) and, for durable implementations,
``restart_subject(queue)`` (close it and open it again from its storage); expose
``TestCase``. ``make_queue(clock)`` and ``restart(queue, clock)`` are deprecated aliases. The
state machine sends, receives, acks, nacks, extends and lets time pass on four queues
(standard with a dead-letter queue, FIFO, plain) and compares every answer with
``blocks.queue.model``: which messages come back, in which order, with which receive counts,
and which calls must fail.

Rules the model enforces:

* **standard order**: a receive returns up to ``max_messages`` visible messages, highest
  ``priority`` first, then oldest (send order) first;
* **FIFO order** (``fifo=True``): messages are grouped by ``group`` (no group is one group of
  its own); a group with any message in flight is locked and gives nothing; from each other
  group a receive takes the run of visible messages at its head, in send order, stopping at
  the first not yet visible; groups are served in the order of their head's priority
  (highest first) then age, each run as far as ``max_messages`` allows, so with
  ``max_messages > 1`` one receive may return several consecutive messages of one group
  (then of the next), never a later message of a group without the earlier ones;
* **visibility**: a received message is invisible for ``visibility_ms`` (the receive's, else
  the queue's) and becomes visible again when that runs out; each receive increments its
  ``receive_count``;
* **delay**: a message sent with ``delay_ms`` (or nacked with one) is invisible until then;
* **ack** deletes a message; **nack** makes it visible again (after its delay);
  **extend_visibility** sets a new deadline from now. Each needs the receipt of the latest
  receive: an unknown or deleted message raises ``NotFound``, a stale receipt (the message
  was received again since) raises ``Conflict``, and extending a message no longer in flight
  raises ``Conflict``;
* **dead letters**: a message whose visibility runs out, or that is nacked, after
  ``max_receives`` receives moves to the dead-letter queue as a new visible message (or is
  dropped when the queue has none);
* **deduplication**: a send with a ``dedup_id`` seen within ``dedup_window_ms`` returns the
  first send's id and stores nothing;
* **restart**: ``restart_subject`` changes nothing the model can see;
* **bad input** changes nothing: an unknown queue raises ``NotFound``; a priority outside
  ``[0, 255]``, a malformed receipt and ``max_messages=0`` raise ``InvalidArgument``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, initialize, rule

from blocks.core.clock import ManualClock
from blocks.core.errors import BlocksError, Conflict, InvalidArgument, NotFound
from blocks.queue.api import Message, Queue
from blocks.queue.model import ModelQueue, QueueModel
from blocks.testing.contract import Contract

__all__ = ["QueueContract"]

# (name, visibility_ms, max_receives, dead_letter, fifo, dedup_window_ms)
QUEUES = (
    ("dlq", 1_000, 0, None, False, 500),
    ("work", 1_000, 2, "dlq", False, 500),
    ("fifo", 800, 3, "dlq", True, 500),
    ("plain", 600, 0, None, False, 500),
)
queue_names = st.sampled_from([q[0] for q in QUEUES])
bodies = st.binary(max_size=8)
groups = st.sampled_from([None, "g1", "g2", "g3"])
dedup_ids = st.one_of(st.none(), st.sampled_from(["d1", "d2", "d3"]))


class QueueContract(Contract[Queue]):
    """Checks a ``Queue`` implementation against ``QueueModel``."""

    properties = (
        "priority order",
        "FIFO group order",
        "visibility timeout",
        "delay",
        "receipts",
        "dead letters",
        "deduplication",
        "restart",
        "bad input",
    )
    legacy_hooks = {"make_queue": "make_subject", "restart": "restart_subject"}

    receipts = Bundle("receipts")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(wall_ms=1_000_000)
        self.model = QueueModel()
        self.ids: dict[str, int] = {}  # implementation id -> model id
        self.queue: Queue | None = None

    # -- hooks for subclasses ----------------------------------------------------------------

    async def make_subject(self) -> Queue:
        return await self.make_queue(self.clock)

    async def restart_subject(self, queue: Queue) -> Queue | None:
        """Close and reopen a durable implementation; None (the default) skips restarts."""
        return await self.restart(queue, self.clock)

    async def make_queue(self, clock: ManualClock) -> Queue:
        """Deprecated alias of ``make_subject``."""
        raise NotImplementedError(f"{type(self).__name__} must override make_subject()")

    async def restart(self, queue: Queue, clock: ManualClock) -> Queue | None:
        """Deprecated alias of ``restart_subject``."""
        return None

    # -- plumbing ----------------------------------------------------------------------------

    def expect(self, coroutine: Coroutine[Any, Any, Any], error: type[BlocksError]) -> None:
        try:
            self.run(coroutine)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    def teardown(self) -> None:
        self.finish_subject(self.queue)

    @property
    def q(self) -> Queue:
        assert self.queue is not None
        return self.queue

    # -- rules -------------------------------------------------------------------------------

    @initialize()
    def build(self) -> None:
        self.queue = self.open_subject()
        self.model.advance(self.clock.now_ms())
        for name, visibility_ms, max_receives, dead_letter, fifo, window in QUEUES:
            self.run(
                self.q.create_queue(
                    name,
                    visibility_ms=visibility_ms,
                    max_receives=max_receives,
                    dead_letter=dead_letter,
                    fifo=fifo,
                    dedup_window_ms=window,
                )
            )
            self.model.queues[name] = ModelQueue(
                name, visibility_ms, max_receives, dead_letter, fifo, window
            )

    @rule(
        name=queue_names,
        body=bodies,
        delay_ms=st.sampled_from([0, 0, 0, 300]),
        group=groups,
        dedup_id=dedup_ids,
        priority=st.sampled_from([0, 0, 1, 5]),
    )
    def send(
        self,
        name: str,
        body: bytes,
        delay_ms: int,
        group: str | None,
        dedup_id: str | None,
        priority: int,
    ) -> None:
        got = self.run(
            self.q.send(
                name, body, delay_ms=delay_ms, group=group, dedup_id=dedup_id, priority=priority
            )
        )
        self.model.advance(self.clock.now_ms())
        expected = self.model.send(name, body, delay_ms, group, dedup_id, priority)
        if got in self.ids:
            assert self.ids[got] == expected, "a deduplicated send returned another id"
        else:
            assert expected == self.model.next_id - 1, "the model deduplicated this send"
            self.ids[got] = expected

    @rule(
        target=receipts,
        name=queue_names,
        max_messages=st.integers(1, 4),
        visibility_ms=st.one_of(st.none(), st.sampled_from([200, 1_500])),
    )
    def receive(self, name: str, max_messages: int, visibility_ms: int | None) -> Any:
        got = self.run(self.q.receive(name, max_messages=max_messages, visibility_ms=visibility_ms))
        self.model.advance(self.clock.now_ms())
        if visibility_ms is None:
            visibility_ms = self.model.queues[name].visibility_ms
        expected = self.model.receive(name, max_messages, visibility_ms)
        assert [(self.ids[m.id], m.body, m.receive_count) for m in got] == [
            (m.id, m.body, m.count) for m in expected
        ], (got, expected)
        return [(name, m) for m in got]

    def _settle(self, receipts: list[tuple[str, Message]], action: str, extra: int) -> None:
        for name, message in receipts:
            model_id = self.ids[message.id]
            count = message.receive_count
            expected: type[BlocksError] | None = None
            self.model.advance(self.clock.now_ms())
            try:
                if action == "ack":
                    self.model.ack(name, model_id, count)
                elif action == "nack":
                    self.model.nack(name, model_id, count, extra)
                else:
                    self.model.extend(name, model_id, count, extra)
            except (NotFound, Conflict) as error:
                expected = type(error)
            if action == "ack":
                call = self.q.ack(name, message.receipt)
            elif action == "nack":
                call = self.q.nack(name, message.receipt, delay_ms=extra)
            else:
                call = self.q.extend_visibility(name, message.receipt, extra)
            if expected is None:
                self.run(call)
            else:
                self.expect(call, expected)

    @rule(receipts=receipts)
    def ack(self, receipts: list[tuple[str, Message]]) -> None:
        self._settle(receipts, "ack", 0)

    @rule(receipts=receipts, delay_ms=st.sampled_from([0, 250]))
    def nack(self, receipts: list[tuple[str, Message]], delay_ms: int) -> None:
        self._settle(receipts, "nack", delay_ms)

    @rule(receipts=receipts, visibility_ms=st.sampled_from([100, 2_000]))
    def extend(self, receipts: list[tuple[str, Message]], visibility_ms: int) -> None:
        self._settle(receipts, "extend", visibility_ms)

    @rule(ms=st.sampled_from([1, 150, 400, 1_000, 3_000]))
    def pass_time(self, ms: int) -> None:
        self.clock.advance(ms=ms)

    @rule()
    def reopen(self) -> None:
        reopened = self.reopen_subject(self.q)
        if reopened is not None:
            self.queue = reopened

    # -- bad input changes nothing -----------------------------------------------------------

    @rule(body=bodies)
    def send_to_unknown_queue(self, body: bytes) -> None:
        self.expect(self.q.send("no-such-queue", body), NotFound)

    @rule(name=queue_names, priority=st.sampled_from([-1, 256, 10**6]))
    def send_bad_priority(self, name: str, priority: int) -> None:
        self.expect(self.q.send(name, b"x", priority=priority), InvalidArgument)

    @rule(name=queue_names, receipt=st.sampled_from(["", "x", "1.", ".1", "1.2.3", "a.b"]))
    def ack_malformed_receipt(self, name: str, receipt: str) -> None:
        self.expect(self.q.ack(name, receipt), InvalidArgument)

    @rule(name=queue_names)
    def receive_zero(self, name: str) -> None:
        self.expect(self.q.receive(name, max_messages=0), InvalidArgument)
