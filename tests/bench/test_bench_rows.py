"""Benchmark rows measure what their names say: right baseline, real workload, like for like."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from benchmarks import counters
from benchmarks.harness import Contender, Workload


def _sketch(contender: str) -> str:
    return contender.split(" ")[0]  # "hll (ours)" -> "hll", "count-min (datasketches)" -> ...


def test_every_counters_ratio_is_against_the_peer_of_the_same_sketch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs: list[tuple[list[str], str]] = []

    def record(
        name: str,
        workloads: Sequence[Workload],
        contenders: Sequence[Contender],
        baseline: str,
        **kw: Any,
    ) -> list[Any]:
        runs.append(([c.name for c in contenders], baseline))
        return []

    monkeypatch.setattr(counters, "run_benchmark", record)
    monkeypatch.setattr(counters, "hll_accuracy", lambda seeds: [])
    monkeypatch.setattr(counters, "cms_accuracy", lambda seeds: [])
    counters.main(argparse.Namespace(out=str(tmp_path), quick=True))
    measured = {name for names, _ in runs for name in names}
    assert {"hll (ours)", "count-min (ours)"} <= measured
    for names, baseline in runs:
        assert baseline in names
        assert {_sketch(name) for name in names} == {_sketch(baseline)}, (names, baseline)


def test_cache_streams_have_the_keys_their_names_say_and_evict() -> None:
    from benchmarks import cache
    from blocks.cache import LRUCache

    streams = cache.streams()
    assert len(set(streams["zipf-100k-keys"])) == 100_000
    for name, stream in streams.items():
        assert len(stream) == cache.MASK + 1, name  # every offset & MASK is in the stream
        lru: LRUCache[int, int] = LRUCache(cache.CAPACITY)
        misses = 0
        for key in stream[: 1 << 16]:  # the first eighth is enough to show it
            if lru.get(key) is None:
                misses += 1
                lru.put(key, key)
        # More misses than slots: the cache filled, and every further miss evicted a key.
        assert misses > 2 * cache.CAPACITY, (name, misses)


class _FakeNats:
    """A connection that records publishes; acknowledgements are delivered by the test."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []

    async def publish(self, subject: str, payload: bytes, reply: str = "") -> None:
        self.published.append((subject, reply))


class _Ack:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data, self.headers = subject, data, None


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_nats_batch_publishes_all_records_then_awaits_all_acks() -> None:
    from benchmarks.pubsub import _AsyncAcks

    async def scenario() -> None:
        connection, acks = _FakeNats(), _AsyncAcks("_INBOX.t")
        batch = asyncio.create_task(acks.publish(connection, "bench.0", 100))
        await _settle()
        # All 100 went out before a single acknowledgement came back: one batch in flight.
        assert len(connection.published) == 100 and not batch.done()
        replies = {reply for _, reply in connection.published}
        assert len(replies) == 1
        (reply,) = replies
        for seq in range(99):
            await acks.handle(_Ack(reply, b'{"stream":"BENCH","seq":%d}' % seq))
        await _settle()
        assert not batch.done()  # done only when every record is acknowledged
        await acks.handle(_Ack(reply, b'{"stream":"BENCH","seq":99}'))
        await batch
        assert acks.pending == {}

        refused = asyncio.create_task(acks.publish(connection, "bench.1", 2))
        await _settle()
        reply = connection.published[-1][1]
        await acks.handle(_Ack(reply, b'{"error":{"code":503}}'))
        with pytest.raises(RuntimeError, match="refused"):
            await refused

    asyncio.run(scenario())


class _FakeRedis:
    def __init__(self) -> None:
        self.reads: list[dict[str, Any]] = []

    async def xadd(self, key: str, fields: dict[str, bytes]) -> bytes:
        return b"1-0"

    async def xreadgroup(self, *args: Any, **kwargs: Any) -> list[Any]:
        self.reads.append(kwargs)
        return []


class _FakeQueue:
    def __init__(self) -> None:
        self.receives: list[dict[str, Any]] = []

    async def send(self, name: str, body: bytes) -> str:
        return "id"

    async def receive(self, name: str, **kwargs: Any) -> list[Any]:
        self.receives.append(kwargs)
        return []


def test_queue_work_cycles_wait_for_a_job_the_same_way() -> None:
    from benchmarks import queue

    redis, ours = _FakeRedis(), _FakeQueue()
    asyncio.run(queue.redis_contender(cycle=True).op({"r": redis}, 0))
    asyncio.run(queue.blocks_contender("b", "batch", cycle=True).op({"q": ours}, 0))
    assert redis.reads[0]["block"] == ours.receives[0]["wait_ms"] == 1000
    assert redis.reads[0]["count"] == ours.receives[0]["max_messages"] == 1


@pytest.mark.parametrize("module_name", ["pubsub", "queue"])
def test_durable_and_non_durable_twins_side_by_side(module_name: str) -> None:
    module = __import__(f"benchmarks.{module_name}", fromlist=["contenders"])
    names = [
        c.name for c in module.contenders(*([1, False] if module_name == "pubsub" else [True]))
    ]
    for twins in (
        ("blocks-durable", "blocks-fsync-never"),
        ("nats-jetstream", "nats-jetstream-sync-always"),
        ("redis-streams", "redis-streams-fsync-always"),
    ):
        assert set(twins) <= set(names), (twins, names)


def test_blob_raw_disk_is_a_contender_of_the_put_workloads(tmp_path: Path) -> None:
    from benchmarks import blob

    args = argparse.Namespace(before_src=None)
    for operation, expected in (("put", True), ("upload", True), ("get", False)):
        names = [c.name for c in blob._contenders(args, tmp_path, 4096, operation, 1)]
        assert (blob.RAW_DISK in names) is expected, (operation, names)
        # Just over the 1 MiB line the raw read needs: each contender draws its own random
        # pool of the object's size, so a larger object only costs os.urandom time.
        large = [c.name for c in blob._contenders(args, tmp_path, 2 * blob.MIB, operation, 1)]
        assert blob.RAW_DISK_READ not in names
        assert (blob.RAW_DISK_READ in large) is not expected, (operation, large)
    reader = blob._raw_disk_read_contender(tmp_path, 5 * blob.MIB + 3, 1)
    files = reader.setup()
    reader.op(files, 3)  # reads (and checks the size of) one of the files written at set-up
    assert (files / "object-1").stat().st_size == 5 * blob.MIB + 3
    assert reader.teardown is not None
    reader.teardown(files)
    assert not files.exists()
    contender = blob._raw_disk_contender(tmp_path, 5 * blob.MIB + 3, 1)
    directory = contender.setup()
    contender.op(directory, 7)
    assert (directory / "object-7").stat().st_size == 5 * blob.MIB + 3
    assert contender.items_per_op == 5 * blob.MIB + 3
    assert contender.teardown is not None
    contender.teardown(directory)
    assert not directory.exists()
