"""GroupCommit: a write returns only once a batch that holds it was written and synced, a
failed fsync is never papered over by a later one that succeeds, and a refused write fails
its own batch only."""

from __future__ import annotations

import errno
import random
import threading
import time

import pytest

from blocks.core.clock import ManualClock
from blocks.kv.engine.group_commit import (
    BATCH_DELAY_S_MAX,
    GroupCommit,
    SyncFailed,
    Ticket,
    WriteFailed,
)

_Plan = list[Ticket[int]]


class _Store:
    """The store's side of the contract: tickets carry numbers; ``write`` "syncs" a batch.

    ``durable`` holds every number a successful ``write`` covered; ``fail`` maps a batch's
    ordinal (1-based) to the exception its ``write`` raises.
    """

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.lock = threading.RLock()
        self.sleep_s = sleep_s
        self.durable: set[int] = set()
        self.batches: list[list[int]] = []
        self.fail: dict[int, BaseException] = {}
        self.in_flight = 0  # batches between prepare and finish: never more than one
        self.overlaps = 0

    def prepare(self, batch: list[Ticket[int]]) -> _Plan:
        self.in_flight += 1
        self.overlaps += self.in_flight > 1
        for ticket in batch:
            ticket.result = ticket.work * 10
        return batch

    def write(self, plan: _Plan) -> None:
        self.batches.append([ticket.work for ticket in plan])
        if self.sleep_s:
            time.sleep(self.sleep_s)
        failure = self.fail.get(len(self.batches))
        if failure is not None:
            raise failure
        self.durable.update(ticket.work for ticket in plan)

    def finish(self, plan: _Plan, ok: bool) -> None:
        self.in_flight -= 1

    def group(self, *, delay_s: float = 0.0, batch_max: int = 8) -> GroupCommit[int, _Plan]:
        return GroupCommit(
            self.lock,
            prepare=self.prepare,
            write=self.write,
            finish=self.finish,
            delay_s=delay_s,
            batch_max=batch_max,
            batch_bytes_max=1 << 20,
        )


def _put(store: _Store, group: GroupCommit[int, _Plan], number: int) -> object:
    ticket = Ticket(number, 1)
    with store.lock:
        group.submit(ticket)
    return group.wait(ticket)


def test_a_failed_fsync_fails_every_later_write() -> None:
    store = _Store()
    group = store.group()
    store.fail[2] = SyncFailed(OSError(errno.EIO, "Input/output error"))
    assert _put(store, group, 1) == 10  # batch 1 succeeds
    with pytest.raises(OSError):
        _put(store, group, 2)  # batch 2's fsync fails
    # The pages batch 2 was to write may be gone; a later fsync would succeed without them,
    # so nothing after the failure may be acknowledged by one.
    with pytest.raises(OSError):
        _put(store, group, 3)
    assert store.batches == [[1], [2]] and store.durable == {1}


def test_a_refused_write_fails_its_batch_and_the_next_one_goes_on() -> None:
    store = _Store()
    group = store.group()
    store.fail[1] = WriteFailed(OSError(errno.ENOSPC, "No space left on device"), "write")
    with pytest.raises(WriteFailed):
        _put(store, group, 1)
    assert _put(store, group, 2) == 20
    assert store.durable == {2} and group.batch_count == 1


def test_a_failed_fsync_fails_the_writers_already_queued() -> None:
    store = _Store(sleep_s=0.05)
    group = store.group()
    store.fail[1] = SyncFailed(OSError(errno.EIO, "Input/output error"))
    outcomes: dict[int, str] = {}

    def writer(number: int) -> None:
        try:
            _put(store, group, number)
            outcomes[number] = "ok"
        except OSError:
            outcomes[number] = "failed"

    first = threading.Thread(target=writer, args=(1,))
    first.start()
    while not store.batches:  # batch 1 is being "synced"
        time.sleep(0.001)
    queued = [threading.Thread(target=writer, args=(n,)) for n in (2, 3)]
    for thread in queued:
        thread.start()
    for thread in [first, *queued]:
        thread.join(timeout=10)
    assert outcomes == {1: "failed", 2: "failed", 3: "failed"}
    assert store.batches == [[1]], "queued writes were not written after the failure"


@pytest.mark.parametrize("delay_s", [0.0, 0.002])
def test_every_write_returns_after_its_batch_was_synced(delay_s: float) -> None:
    store = _Store(sleep_s=0.0005)
    group = store.group(delay_s=delay_s, batch_max=4)
    violations: list[int] = []
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        rng = random.Random(number)
        try:
            for index in range(40):
                work = number * 1000 + index
                if _put(store, group, work) != work * 10:
                    violations.append(work)
                if work not in store.durable:
                    violations.append(work)
                if rng.random() < 0.1:
                    with store.lock:
                        group.wait_settled()  # a rotation: nothing in flight meanwhile
                        assert store.in_flight == 0
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer never returned"
    assert not errors and not violations, (errors, violations[:5])
    assert store.overlaps == 0, "two batches were in flight at once"
    assert all(len(batch) <= 4 for batch in store.batches)
    assert len(store.batches) < 8 * 40  # shared
    assert sorted(w for batch in store.batches for w in batch) == sorted(
        n * 1000 + i for n in range(8) for i in range(40)
    )


def test_drain_waits_for_every_queued_write() -> None:
    store = _Store(sleep_s=0.02)
    group = store.group()
    threads = [threading.Thread(target=_put, args=(store, group, n)) for n in range(4)]
    for thread in threads:
        thread.start()
    while not store.batches:
        time.sleep(0.001)
    with store.lock:
        group.wait_settled(drain=True)
        assert store.durable == set(range(4))
    for thread in threads:
        thread.join(timeout=10)


def test_bad_options_are_refused() -> None:
    store = _Store()
    with pytest.raises(ValueError):
        store.group(delay_s=-1.0)
    with pytest.raises(ValueError):
        store.group(batch_max=0)


def test_the_write_runs_outside_the_lock() -> None:
    """While a batch is written and synced, other threads take the store's lock."""
    store = _Store()
    writing = threading.Event()
    release = threading.Event()
    real_write = store.write

    def slow_write(plan: _Plan) -> None:
        writing.set()
        assert release.wait(10)
        real_write(plan)

    store.write = slow_write  # type: ignore[method-assign]
    group = store.group()
    writer = threading.Thread(target=_put, args=(store, group, 1))
    writer.start()
    assert writing.wait(10)
    try:
        assert store.lock.acquire(timeout=5), "the lock was held through the write"
        store.lock.release()
    finally:
        release.set()
        writer.join(timeout=10)
    assert store.durable == {1}


class _JumpingClock(ManualClock):
    """Every monotonic reading is two seconds past the last one: a linger's deadline (at
    most ``BATCH_DELAY_S_MAX`` ahead) has passed by the next reading."""

    def __init__(self) -> None:
        super().__init__()
        self.readings = 0

    def monotonic(self) -> float:
        self.readings += 1
        self.advance(2.0)
        return super().monotonic()


def test_a_leader_times_its_linger_on_the_injected_clock() -> None:
    store = _Store(sleep_s=0.2)
    clock = _JumpingClock()
    group: GroupCommit[int, _Plan] = GroupCommit(
        store.lock,
        prepare=store.prepare,
        write=store.write,
        finish=store.finish,
        delay_s=BATCH_DELAY_S_MAX,
        batch_max=8,
        batch_bytes_max=1 << 20,
        clock=clock,
    )
    threads = [threading.Thread(target=_put, args=(store, group, n)) for n in (1, 2, 3)]
    threads[0].start()
    while not store.batches:  # batch 1 is being "synced"
        time.sleep(0.001)
    for thread in threads[1:]:
        thread.start()
    while True:  # writers 2 and 3 queue behind it, so batch 1 ends with a company of three
        with store.lock:
            if len(group._pending) == 2:
                break
        time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    # Batch 2's leader lingered for a third writer that never came, until the clock it was
    # given said the delay had passed (a linger on the system clock reads this one never).
    assert [sorted(batch) for batch in store.batches] == [[1], [2, 3]]
    assert clock.readings >= 2
