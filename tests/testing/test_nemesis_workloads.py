"""The workloads' verdicts on known-good and known-bad histories, with fake clients: each
check can fail (a lost write, a stale read after an acknowledged write, diverged counters)."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from blocks.counters.client import CountersClient
from blocks.kv.client import KVClient, Versioned
from blocks.queue.client import QueueClient
from blocks.testing import History, OpType
from blocks.testing.checkers import Delivery
from blocks.testing.workloads import CountersWorkload, KvWorkload, QueueWorkload
from blocks.testing.workloads import counters as counters_workload


class FakeKv:
    def __init__(self, store: dict[str, bytes]) -> None:
        self.store = store

    async def get(self, key: str, *, timeout_s: float | None = None) -> Versioned:
        return Versioned(self.store.get(key), (), b"")

    async def close(self) -> None:
        return None


def _kv(store: dict[str, bytes], reads: list[tuple[str, bytes | None]]) -> KvWorkload:
    workload = KvWorkload(cast(KVClient, FakeKv(store)), 1, writers=1, op_timeout_s=1.0)
    history = workload.history
    for key in ("a", "b"):
        workload.keys.append(key)
        history.add(0, OpType.INVOKE, "write", key, key.encode())
        history.add(0, OpType.OK, "write", key, key.encode())
    for key, value in reads:  # each read starts after both writes were acknowledged
        history.add(1, OpType.INVOKE, "read", key, None)
        history.add(1, OpType.OK, "read", key, value)
    return workload


def test_kv_verdicts() -> None:
    good = asyncio.run(_kv({"a": b"a", "b": b"b"}, [("a", b"a")]).verify())
    assert good.valid and good.check.acknowledged == 2
    lost = asyncio.run(_kv({"a": b"a"}, []).verify())
    assert not lost.valid and lost.check.lost == (b"b",)
    stale = asyncio.run(_kv({"a": b"a", "b": b"b"}, [("a", None)]).verify())
    assert not stale.valid and "not linearizable" in stale.problems[0]


class FakeCounters:
    def __init__(self, value: int) -> None:
        self.reported = value

    async def value(self, name: str) -> int:
        return self.reported

    async def close(self) -> None:
        return None


def _counters(values: list[int], acknowledged: int) -> CountersWorkload:
    workload = CountersWorkload.__new__(CountersWorkload)
    workload.clients = [cast(CountersClient, FakeCounters(v)) for v in values]
    workload.counter = "c"
    workload.history = History()
    for _ in range(acknowledged):
        workload.history.add(0, OpType.INVOKE, "increment", "c", 1)
        workload.history.add(0, OpType.OK, "increment", "c", 1)
    return workload


def test_counters_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters_workload, "CONVERGE_TIMEOUT_S", 0.3)
    assert asyncio.run(_counters([3, 3, 3], 3).verify()).valid
    short = asyncio.run(_counters([2, 2, 2], 3).verify())
    assert not short.valid and short.check.lost
    diverged = asyncio.run(_counters([3, 4, 3], 3).verify())
    assert not diverged.valid and "diverged" in diverged.problems[0]


class FakeQueue:
    async def receive(self, name: str, **options: object) -> list[object]:
        return []

    async def close(self) -> None:
        return None


def test_queue_verdicts_catch_an_early_redelivery() -> None:
    def workload(second_delivery_ns: int) -> QueueWorkload:
        queue = QueueWorkload(cast(QueueClient, FakeQueue()), "q", senders=1, visibility_ms=10)
        queue.history.add(0, OpType.INVOKE, "write", None, b"m")
        queue.history.add(0, OpType.OK, "write", None, b"m")
        queue.consumed.append(b"m")
        queue.deliveries.append(Delivery("1", b"m", 1_000, 2_000))
        queue.deliveries.append(Delivery("1", b"m", second_delivery_ns - 500, second_delivery_ns))
        return queue

    assert asyncio.run(workload(1_000 + 10_000_000 + 1).verify()).valid  # after the timeout
    early = asyncio.run(workload(5_000).verify())
    assert not early.valid and "queue checker" in early.problems[0]
