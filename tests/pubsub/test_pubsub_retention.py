"""Retention by age and size, compaction by key, seek by timestamp."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import FailedPrecondition
from blocks.pubsub.local import LocalBroker


@pytest.mark.parametrize("durable", [False, True])
def test_retention_by_age_and_size(tmp_path: Path, durable: bool) -> None:
    async def main() -> None:
        clock = ManualClock(wall_ms=1_000_000)
        broker = LocalBroker(
            tmp_path / "b" if durable else None, clock=clock, fsync="never", segment_bytes_max=200
        )
        await broker.create_topic("aged", retention_ms=1_000)
        await broker.create_topic("sized", retention_bytes=100)
        for i in range(20):
            await broker.produce("aged", bytes([i]) * 10)
            await broker.produce("sized", bytes([i]) * 10)
            clock.advance(ms=100)
        broker.apply_retention()
        aged = await broker.fetch("aged", 0, 0, 100)
        sized = await broker.fetch("sized", 0, 0, 100)
        # Memory trims record by record; the log whole segments, keeping up to one extra.
        assert aged[-1].offset == 19 and sized[-1].offset == 19
        assert all(r.timestamp_ms >= clock.now_ms() - 1_000 - (600 if durable else 0) for r in aged)
        assert 10 <= len(aged) <= (16 if durable else 10)
        assert sum(len(r.value) for r in sized) <= (300 if durable else 100)
        first, next_offset = await broker.end_offsets("aged", 0)
        assert (first, next_offset) == (aged[0].offset, 20)
        await broker.close()

    asyncio.run(main())


def test_compaction_keeps_the_newest_per_key_and_offsets() -> None:
    async def main() -> None:
        broker = LocalBroker()
        await broker.create_topic("state", compact=True)
        for i, key in enumerate([b"a", b"b", b"a", None, b"b", b"a"]):
            await broker.produce("state", bytes([i]), key=key)
        assert broker.compact("state") == 3
        records = await broker.fetch("state", 0, 0, 100)
        assert [(r.offset, r.key) for r in records] == [(3, None), (4, b"b"), (5, b"a")]
        await broker.close()

    asyncio.run(main())


def test_seek_by_time(tmp_path: Path) -> None:
    async def main() -> None:
        clock = ManualClock(wall_ms=10_000)
        broker = LocalBroker(tmp_path, clock=clock)
        await broker.create_topic("t")
        for _ in range(10):
            await broker.produce("t", b"x")
            clock.advance(ms=10)
        assert await broker.offset_for_time("t", 0, 10_035) == 4
        assert await broker.offset_for_time("t", 0, 0) == 0
        assert await broker.offset_for_time("t", 0, 99_999) == 10
        clock.jump_wall_ms(-5_000)  # the wall clock steps back: timestamps stay monotonic
        await broker.produce("t", b"late")
        [late] = await broker.fetch("t", 0, 10)
        assert late.timestamp_ms >= 10_090
        with pytest.raises(FailedPrecondition):
            broker.compact("t")
        await broker.close()

    asyncio.run(main())
