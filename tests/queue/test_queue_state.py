"""Queue core properties: exclusive holders, dead letters, FIFO order, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blocks.core.errors import Conflict, InvalidArgument, NotFound, Overloaded
from blocks.queue.broker import QueueBroker
from blocks.queue.config import QueueConfig
from blocks.queue.state import QueueState, parse_receipt

ops = st.lists(
    st.tuples(
        st.sampled_from(["send", "receive", "ack", "nack", "time"]),
        st.integers(0, 3),  # group index / max messages
        st.integers(0, 50),  # which held receipt / time step
    ),
    max_size=80,
)


@given(ops)
def test_fifo_groups_deliver_in_order_and_never_twice_at_once(
    steps: list[tuple[str, int, int]],
) -> None:
    queue = QueueState(QueueConfig("f", fifo=True, visibility_ms=100))
    now, seq = 0, 1
    held: dict[int, str] = {}  # seq -> receipt of the current holder
    acked: set[int] = set()
    sent: dict[int, str] = {}  # seq -> group
    for op, small, big in steps:
        queue.advance(now)
        held = {s: r for s, r in held.items() if (m := queue.get(s)) and m.deadline_ms > now}
        if op == "send":
            queue.send(seq, b"", now, group=f"g{small % 2}")
            sent[seq] = f"g{small % 2}"
            seq += 1
        elif op == "receive":
            batch = queue.receive(now, small + 1, 100)
            for position, message in enumerate(batch):
                s = int(message.id)
                assert s not in held, "delivered while another consumer holds it"
                group = sent[s]
                earlier = [e for e, g in sent.items() if g == group and e < s and e not in acked]
                same_batch = {int(m.id) for m in batch[:position]}
                assert set(earlier) <= same_batch, "FIFO order broken within a group"
                assert not any(sent[h] == group for h in held), "group delivered while locked"
            for message in batch:
                held[int(message.id)] = message.receipt
        elif op in ("ack", "nack") and held:
            s = sorted(held)[big % len(held)]
            if op == "ack":
                queue.ack(held.pop(s), now)
                acked.add(s)
            else:
                queue.nack(held.pop(s), now)
        elif op == "time":
            now += big * 5


def test_fifo_group_stays_locked_while_a_later_message_is_held() -> None:
    queue = QueueState(QueueConfig("f", fifo=True))
    queue.send(1, b"first", 0, group="g")
    queue.send(2, b"second", 0, group="g")
    first, second = queue.receive(0, 2, 100)
    queue.nack(first.receipt, 0)
    assert queue.receive(0, 2, 100) == []  # "second" is still held: the group waits
    queue.ack(second.receipt, 0)
    assert [m.body for m in queue.receive(0, 2, 100)] == [b"first"]


def test_dead_letter_after_max_receives() -> None:
    broker = QueueBroker()
    broker.execute(["create", 0, {"name": "dlq"}])
    broker.execute(["create", 0, {"name": "q", "max_receives": 3, "dead_letter": "dlq"}])
    broker.execute(["send", 0, "q", b"poison", 0, None, None, 0])
    for attempt in range(1, 4):
        [message] = broker.execute(["receive", attempt * 100, "q", 1, 10])
        assert message.receive_count == attempt
    assert broker.execute(["receive", 1_000, "q", 1, 10]) == []
    [dead] = broker.execute(["receive", 1_000, "dlq", 1, 10])
    assert dead.body == b"poison" and dead.receive_count == 1


def test_stale_receipt_conflicts_and_late_ack_works() -> None:
    queue = QueueState(QueueConfig("q", visibility_ms=10))
    queue.send(1, b"a", 0)
    [first] = queue.receive(0, 1, 10)
    queue.advance(20)  # expired, not yet received again: a late ack still works
    queue.ack(first.receipt, 20)
    with pytest.raises(NotFound):
        queue.ack(first.receipt, 20)
    queue.send(2, b"b", 20)
    [one] = queue.receive(20, 1, 10)
    queue.advance(40)
    [two] = queue.receive(40, 1, 10)
    with pytest.raises(Conflict):
        queue.ack(one.receipt, 40)
    with pytest.raises(Conflict):
        queue.extend_visibility(one.receipt, 40, 100)
    queue.ack(two.receipt, 40)


def test_priorities_delays_and_dedup() -> None:
    queue = QueueState(QueueConfig("q", dedup_window_ms=100))
    queue.send(1, b"low", 0, priority=0)
    queue.send(2, b"high", 0, priority=9)
    queue.send(3, b"later", 0, priority=9, delay_ms=50)
    assert queue.send(4, b"dup", 0, dedup_id="x") == (4, False)
    assert queue.send(5, b"dup", 10, dedup_id="x") == (4, True)
    assert [m.body for m in queue.receive(10, 10, 1000)] == [b"high", b"low", b"dup"]
    queue.advance(60)
    assert [m.body for m in queue.receive(60, 10, 1000)] == [b"later"]
    assert queue.send(6, b"dup", 200, dedup_id="x") == (6, False)  # window passed


def test_clock_going_backwards_does_not_unexpire() -> None:
    queue = QueueState(QueueConfig("q"))
    queue.send(1, b"a", 1000, delay_ms=10)
    queue.advance(1010)
    assert [m.body for m in queue.receive(1010, 1, 100)] == [b"a"]
    queue.advance(500)
    assert queue.get(1) is not None and queue.get(1).deadline_ms == 1110  # type: ignore[union-attr]
    queue.advance(1100)
    assert queue.receive(1100, 1, 100) == []  # time stays at 1010 for this queue


def test_bad_input_changes_nothing() -> None:
    queue = QueueState(QueueConfig("q", messages_max=1, body_bytes_max=4))
    for call in (
        lambda: queue.send(1, b"12345", 0),
        lambda: queue.send(1, "text", 0),  # type: ignore[arg-type]
        lambda: queue.send(1, b"", 0, priority=256),
        lambda: queue.send(1, b"", 0, delay_ms=-1),
        lambda: queue.send(1, b"", 0, group="g" * 200),
        lambda: queue.receive(0, 0, 10),
        lambda: queue.receive(0, 1, -5),
    ):
        with pytest.raises(InvalidArgument):
            call()
    assert len(queue) == 0
    queue.send(1, b"", 0)
    with pytest.raises(Overloaded):
        queue.send(2, b"", 0)
    for receipt in ("", "1", "a.1", "1.b", "1.1.1", "x" * 100):
        with pytest.raises(InvalidArgument):
            parse_receipt(receipt)
    with pytest.raises(InvalidArgument):
        QueueConfig("bad name!")
    with pytest.raises(InvalidArgument):
        QueueConfig("q", dead_letter="q")


def test_broker_rejects_malformed_commands() -> None:
    broker = QueueBroker()
    for command in (
        [],
        ["send"],
        ["nope", 1],
        ["send", -1],
        ["send", 1, "q"],
        "x",
        ["ack", 1, 5, 6],
    ):
        with pytest.raises((InvalidArgument, NotFound)):
            broker.execute(command)
    with pytest.raises(NotFound):
        broker.execute(["create", 0, {"name": "q", "dead_letter": "missing"}])


def test_snapshot_restore_is_identical() -> None:
    broker = QueueBroker()
    broker.execute(["create", 0, {"name": "d"}])
    broker.execute(
        ["create", 0, {"name": "f", "fifo": True, "max_receives": 1, "dead_letter": "d"}]
    )
    for i in range(6):
        broker.execute(["send", i, "f", bytes([i]), i % 2 * 50, f"g{i % 2}", f"id{i}", i % 3])
    broker.execute(["receive", 10, "f", 2, 30])
    copy = QueueBroker.restore(broker.snapshot())
    for now in (20, 45, 80, 200):
        a = broker.execute(["receive", now, "f", 3, 30])
        b = copy.execute(["receive", now, "f", 3, 30])
        assert a == b
        assert broker.execute(["receive", now, "d", 3, 30]) == copy.execute(
            ["receive", now, "d", 3, 30]
        )
    assert broker.snapshot() == copy.snapshot()
