"""The per-block history checkers and the pairing of events into operations."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from blocks.core.errors import Unavailable
from blocks.testing.checkers import (
    Deletion,
    Delivery,
    InvalidHistory,
    Operation,
    QueueSend,
    Release,
    Send,
    check_counter_convergence,
    check_history,
    check_object_history,
    check_queue_history,
    check_unique_ids,
    pair_operations,
)
from blocks.testing.history import History, OpType


def _op(
    function: str,
    key: object,
    value: object,
    invoke: int,
    complete: int | None,
    *,
    output: object = None,
    status: str = "ok",
    index: int = 0,
) -> Operation:
    if complete is None:
        status = "info"
    return Operation(index, 0, function, key, value, output, status, invoke, complete)  # type: ignore[arg-type]


# -- pairing ---------------------------------------------------------------------------------


def test_events_pair_into_operations_with_their_times() -> None:
    ticks = itertools.count(0, 10)
    history = History(clock_ns=lambda: next(ticks))

    async def failing() -> None:
        raise Unavailable("down")

    async def reading() -> bytes:
        return b"v"

    async def run() -> None:
        await history.call(1, "write", "k", b"v", reading())
        await history.call(2, "read", "k", None, reading(), read=True)
        await history.call(1, "write", "k", b"x", failing(), definite=(Unavailable,))
        await history.call(1, "write", "k", b"y", failing())

    asyncio.run(run())
    history.add(3, OpType.INVOKE, "read", "k")  # never completed
    ops = pair_operations(history)
    assert [(o.function, o.status, o.invoke_ns, o.complete_ns) for o in ops] == [
        ("write", "ok", 0, 10),
        ("read", "ok", 20, 30),
        ("write", "fail", 40, 50),
        ("write", "info", 60, None),
        ("read", "info", 80, None),
    ]
    assert ops[1].output == b"v" and ops[0].output == b"v"


def test_malformed_event_streams_are_rejected() -> None:
    history = History()
    history.add(1, OpType.OK, "read", "k")
    with pytest.raises(InvalidHistory):
        pair_operations(history)
    history = History()
    history.add(1, OpType.INVOKE, "read", "k")
    history.add(1, OpType.INVOKE, "read", "k")
    with pytest.raises(InvalidHistory):
        pair_operations(history)


# -- queue -----------------------------------------------------------------------------------

SECOND = 1_000_000_000


def test_queue_history_without_faults_is_valid() -> None:
    sends = [QueueSend("a", True), QueueSend("b", True), QueueSend("c", False)]
    deliveries = [
        Delivery("c1", "a", 0, 10),
        Delivery("c2", "a", 31 * SECOND, 31 * SECOND + 5),  # after a 30 s timeout
        Delivery("c1", "b", 5, 20),
    ]
    result = check_queue_history(sends, deliveries, visibility_timeout_ns=30 * SECOND)
    assert result.valid, result.describe()


def test_queue_checker_finds_loss_invention_early_redelivery_and_resurrection() -> None:
    sends = [QueueSend("a", True), QueueSend("b", True), QueueSend("lost", True)]
    deliveries = [
        Delivery("c1", "a", 0, 10),
        Delivery("c2", "a", 2 * SECOND, 2 * SECOND + 1),  # timeout 30 s: too early
        Delivery("c1", "b", 0, 10),
        Delivery("c2", "b", 40 * SECOND, 40 * SECOND + 1),  # deleted at 20 s
        Delivery("c1", "ghost", 0, 10),
    ]
    result = check_queue_history(
        sends,
        deliveries,
        visibility_timeout_ns=30 * SECOND,
        deletions=[Deletion("b", 20 * SECOND)],
    )
    assert not result.valid
    assert result.lost == ("lost",)
    assert result.never_sent == ("ghost",)
    assert [(a.consumer, b.consumer) for a, b in result.early_redeliveries] == [("c1", "c2")]
    assert [d.message_id for d in result.delivered_after_delete] == ["b"]


def test_a_release_allows_an_early_redelivery() -> None:
    deliveries = [Delivery("c1", "a", 0, 10), Delivery("c2", "a", 100, 110)]
    sends = [QueueSend("a", True)]
    strict = check_queue_history(sends, deliveries, visibility_timeout_ns=SECOND)
    released = check_queue_history(
        sends, deliveries, visibility_timeout_ns=SECOND, releases=[Release("a", 50)]
    )
    assert not strict.valid and released.valid


# -- blob objects ----------------------------------------------------------------------------


def test_objects_must_be_byte_identical_and_the_last_write_must_win() -> None:
    ops = [
        _op("put", "a", b"one", 0, 10),
        _op("put", "a", b"two", 20, 30),
        _op("get", "a", None, 40, 50, output=b"two"),
        _op("put", "b", b"bee", 0, 10),
        _op("delete", "b", None, 20, 30),
        _op("put", "c", b"maybe", 0, None),
    ]
    good = check_object_history(ops, {"a": b"two", "b": None, "c": None, "d": None})
    assert good.valid, good.describe()
    assert check_object_history(ops, {"c": b"maybe"}).valid
    stale = check_object_history(ops, {"a": b"one"})
    assert stale.wrong_final == (("a", b"one"),)
    corrupt = check_object_history(
        [*ops, _op("get", "a", None, 60, 70, output=b"tw")], {"a": b"two"}
    )
    assert len(corrupt.corrupted_reads) == 1 and not corrupt.valid
    lost = check_object_history(ops, {"b": b"bee"})  # the acknowledged delete was lost
    assert not lost.valid


def test_concurrent_puts_may_end_either_way() -> None:
    ops = [_op("put", "a", b"x", 0, 10), _op("put", "a", b"y", 5, 15)]
    assert check_object_history(ops, {"a": b"x"}).valid
    assert check_object_history(ops, {"a": b"y"}).valid
    assert not check_object_history(ops, {"a": None}).valid


# -- sequencer -------------------------------------------------------------------------------


def test_ids_must_be_unique_and_increase_in_real_time_per_generator() -> None:
    ok = [
        _op("next", "g1", None, 0, 10, output=5),
        _op("next", "g1", None, 20, 30, output=7),
        _op("next", "g1", None, 21, 25, output=6),  # overlaps the previous call: either order
        _op("next", "g2", None, 40, 50, output=1),  # another generator may be lower
    ]
    assert check_unique_ids(ok).valid
    backwards = [*ok, _op("next", "g1", None, 60, 70, output=6, index=9)]
    result = check_unique_ids(backwards)
    assert result.duplicates == (6,)
    assert [o.index for o in result.decreases] == [9]


# -- counters --------------------------------------------------------------------------------


def test_counters_converge_to_the_acknowledged_sum() -> None:
    ops = [
        _op("increment", "c", 5, 0, 1),
        _op("increment", "c", 2, 0, None),  # unknown: may count
        _op("increment", "c", -1, 0, 1),
        _op("increment", "c", 100, 0, 1, status="fail"),  # must not count
    ]
    assert check_counter_convergence(ops, {"c": [4, 4, 4]}).valid
    assert check_counter_convergence(ops, {"c": [6, 6]}).valid
    result = check_counter_convergence(ops, {"c": [104, 4]})
    assert result.divergent == (("c", (104, 4)),)
    assert result.wrong_sums == (("c", 104),)
    assert result.bounds == (("c", 4, 6),)


# -- pub-sub ---------------------------------------------------------------------------------


def test_pubsub_producer_order_and_the_old_import_path() -> None:
    from blocks.pubsub.checker import Send as OldSend
    from blocks.pubsub.checker import check_history as old_check_history

    assert OldSend is Send and old_check_history is check_history
    final = {0: [(0, b"p:0"), (1, b"p:2"), (2, b"p:1")]}
    in_order = [Send(0, 0, b"p:0", "p", 0), Send(0, 1, b"p:1", "p", 1)]
    assert not check_history(in_order, [], [], {0: [(0, b"p:0"), (1, b"p:1")]}).out_of_order
    swapped = [Send(0, 0, b"p:0", "p", 0), Send(0, 2, b"p:1", "p", 1), Send(0, 1, b"p:2", "p", 2)]
    result = check_history(swapped, [], [], final)
    assert [(a.sequence, b.sequence) for a, b in result.out_of_order] == [(1, 2)]
    assert not result.valid


def test_each_verdict_names_real_fields_as_its_failures() -> None:
    import dataclasses

    from blocks.testing.checkers import CounterCheck, IdCheck, ObjectCheck, QueueCheck
    from blocks.testing.history import UniqueValuesCheck

    for verdict in (CounterCheck, IdCheck, ObjectCheck, QueueCheck, UniqueValuesCheck):
        fields = {field.name for field in dataclasses.fields(verdict)}
        assert verdict.failures and set(verdict.failures) <= fields, verdict.__name__
    failed = IdCheck(ids=3, duplicates=(7,), decreases=())
    assert not failed.valid
    assert failed.describe() == "ids=3 duplicates=1 decreases=0"
    assert failed.first_of("duplicates") == " first: 7" and failed.first_of("decreases") == ""
    assert IdCheck(ids=3, duplicates=(), decreases=()).valid
