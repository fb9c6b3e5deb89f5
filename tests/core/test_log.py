"""SegmentLog: appends, reads, rolls, retention, fsync policies, group commit and bad input."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import (
    Corruption,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    Unavailable,
)
from blocks.core.log import GroupCommitter, SegmentLog
from blocks.core.log.format import HEADER_BYTES


def segment_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".log"))


class FsyncCounter:
    """Counts data fsyncs by standing in for ``os.fdatasync`` (and ``os.fsync``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = os.fsync

        def counting(descriptor: int) -> None:
            self.calls += 1
            real(descriptor)

        monkeypatch.setattr(os, "fdatasync", counting, raising=False)


def test_append_read_and_offsets(tmp_path: Path) -> None:
    with SegmentLog(tmp_path) as log:
        assert (log.first_offset, log.next_offset) == (0, 0)
        assert log.append(b"zero") == 0
        assert log.append_many([b"one", b"", bytearray(b"three")]) == [1, 2, 3]
        assert log.append(memoryview(b"four")) == 4
        assert [log.read(offset) for offset in range(5)] == [
            b"zero",
            b"one",
            b"",
            b"three",
            b"four",
        ]
        assert list(log.iter_from(3)) == [(3, b"three"), (4, b"four")]
        assert list(log.iter_from(5)) == []
        assert log.durable_offset == 5
        assert log.append_many([]) == []


def test_segments_roll_and_are_named_by_base_offset(tmp_path: Path) -> None:
    frame = HEADER_BYTES + 10
    with SegmentLog(tmp_path, segment_bytes_max=3 * frame) as log:
        log.append_many([b"x" * 10] * 7)
        assert segment_files(tmp_path) == [f"{base:020d}.log" for base in (0, 3, 6)]
        assert all(
            os.path.getsize(tmp_path / name) <= 3 * frame for name in segment_files(tmp_path)
        )
        assert [record for _, record in log.iter_from(0)] == [b"x" * 10] * 7
        assert log.stats().segments == 3


def test_reopen_recovers_everything(tmp_path: Path) -> None:
    records = [bytes([index]) * index for index in range(60)]
    with SegmentLog(tmp_path, segment_bytes_max=300, index_interval_bytes=64) as log:
        log.append_many(records)
    with SegmentLog(tmp_path, segment_bytes_max=300, index_interval_bytes=64) as log:
        assert log.recovery.clean and log.recovery.records == 60
        assert log.next_offset == 60
        assert [log.read(offset) for offset in range(60)] == records
        assert log.append(b"more") == 60


def test_truncate_before_deletes_whole_segments_only(tmp_path: Path) -> None:
    frame = HEADER_BYTES + 1
    with SegmentLog(tmp_path, segment_bytes_max=4 * frame) as log:
        log.append_many([b"r"] * 10)  # segments at 0, 4, 8
        assert log.truncate_before(3) == 0
        assert log.truncate_before(5) == 4
        assert segment_files(tmp_path) == [f"{4:020d}.log", f"{8:020d}.log"]
        with pytest.raises(NotFound):
            log.read(3)
        assert log.read(4) == b"r"
        assert log.truncate_before(10) == 8  # the active segment stays
        with pytest.raises(InvalidArgument):
            log.truncate_before(11)
    with SegmentLog(tmp_path, segment_bytes_max=4 * frame) as log:
        assert (log.first_offset, log.next_offset) == (8, 10)


def test_second_open_for_writing_is_refused(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    try:
        with pytest.raises(FailedPrecondition, match="already open"):
            SegmentLog(tmp_path)
    finally:
        log.close()
    SegmentLog(tmp_path).close()  # released by close


@pytest.mark.parametrize(
    "record", ["text", 5, None, [b"a"], object()], ids=["str", "int", "none", "list", "object"]
)
def test_non_bytes_records_are_refused(tmp_path: Path, record: Any) -> None:
    with SegmentLog(tmp_path) as log:
        with pytest.raises(InvalidArgument):
            log.append(record)
        with pytest.raises(InvalidArgument):
            log.append_many([b"fine", record])
        assert log.next_offset == 0
        assert os.path.getsize(tmp_path / segment_files(tmp_path)[0]) == 0


def test_oversize_records_and_bad_batches_are_refused(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, record_bytes_max=8) as log:
        assert log.append(b"12345678") == 0
        with pytest.raises(InvalidArgument, match="record_bytes_max"):
            log.append(b"123456789")
        with pytest.raises(InvalidArgument):
            log.append_many([b"ok", b"123456789"])
        with pytest.raises(InvalidArgument):
            log.append_many(b"one record, not a batch")
        assert log.next_offset == 1


def test_bad_offsets(tmp_path: Path) -> None:
    with SegmentLog(tmp_path) as log:
        log.append(b"a")
        for offset in (-1, 1, 100):
            with pytest.raises(NotFound):
                log.read(offset)
        with pytest.raises(NotFound):
            log.iter_from(2)
        for bad in ("0", 0.0, True, None):
            with pytest.raises(InvalidArgument):
                log.read(bad)  # type: ignore[arg-type]
            with pytest.raises(InvalidArgument):
                log.truncate_before(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arguments",
    [
        {"fsync": "sometimes"},
        {"segment_bytes_max": 10},
        {"segment_bytes_max": 100, "record_bytes_max": 100},
        {"record_bytes_max": -1},
        {"batch_delay_ms": -1},
        {"batch_records_max": 10, "pending_records_max": 5},
        {"index_interval_bytes": 0},
    ],
)
def test_bad_configuration_is_refused_before_touching_disk(
    tmp_path: Path, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgument):
        SegmentLog(tmp_path / "log", **arguments)
    assert not (tmp_path / "log").exists()


def test_closed_log_refuses_work(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.append(b"a")
    log.close()
    log.close()  # idempotent
    assert log.closed
    calls = [
        lambda: log.append(b"b"),
        lambda: log.append_many([b"b"]),
        lambda: log.read(0),
        lambda: log.iter_from(0),
        lambda: log.sync(),
        lambda: log.truncate_before(0),
        lambda: asyncio.run(log.append_async(b"b")),
    ]
    for call in calls:
        with pytest.raises(FailedPrecondition):
            call()


def test_iterator_stops_when_the_log_closes(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path)
    log.append_many([b"a", b"b"])
    iterator = log.iter_from(0)
    assert next(iterator) == (0, b"a")
    log.close()
    assert next(iterator) == (1, b"b")  # already read in the same chunk
    with pytest.raises(FailedPrecondition):
        next(iterator)


def test_iterator_sees_later_appends(tmp_path: Path) -> None:
    with SegmentLog(tmp_path, segment_bytes_max=100) as log:
        log.append(b"a")
        iterator = log.iter_from(0)
        assert next(iterator) == (0, b"a")
        log.append_many([b"b" * 30, b"c" * 30, b"d" * 30])  # rolls
        assert list(iterator) == [(1, b"b" * 30), (2, b"c" * 30), (3, b"d" * 30)]


def test_fsync_always_syncs_every_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SegmentLog(tmp_path, fsync="always") as log:
        counter = FsyncCounter(monkeypatch)
        for index in range(5):
            log.append(b"r")
            assert counter.calls == index + 1
            assert log.durable_offset == index + 1
        log.append_many([b"a", b"b", b"c"])
        assert counter.calls == 6


def test_fsync_never_syncs_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SegmentLog(tmp_path, fsync="never", segment_bytes_max=150) as log:
        counter = FsyncCounter(monkeypatch)
        log.append_many([b"x" * 40] * 5)  # rolls twice
        assert counter.calls == 0 and log.durable_offset == 0
        assert log.sync() == 5
        assert counter.calls == 3  # the two rolled segments and the active one
        assert log.stats().directory_fsyncs >= 1


def test_batch_append_syncs_when_the_window_elapses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    with SegmentLog(tmp_path, fsync="batch", batch_delay_ms=10, clock=clock) as log:
        counter = FsyncCounter(monkeypatch)
        log.append(b"a")
        log.append(b"b")
        assert counter.calls == 0 and log.durable_offset == 0
        clock.advance(ms=10)
        log.append(b"c")
        assert counter.calls == 1 and log.durable_offset == 3
        log.append(b"d")
        assert log.sync() == 4 and counter.calls == 2
        assert log.sync() == 4 and counter.calls == 2  # nothing new: no fsync


def test_group_commit_shares_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    appenders = 64
    with SegmentLog(tmp_path, fsync="batch", batch_delay_ms=20) as log:
        counter = FsyncCounter(monkeypatch)

        async def main() -> list[int]:
            return await asyncio.gather(*(log.append_async(b"r%d" % i) for i in range(appenders)))

        offsets = asyncio.run(main())
        assert sorted(offsets) == list(range(appenders))
        assert log.durable_offset == appenders
        assert 1 <= counter.calls < appenders
        assert counter.calls <= 2


def test_fsync_always_async_appends_share_fsyncs_and_return_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``always`` the awaited appends are group committed without a window: every
    caller returns only once its record is durable, and concurrent callers share fsyncs."""
    appenders = 32
    with SegmentLog(tmp_path, fsync="always") as log:
        counter = FsyncCounter(monkeypatch)

        async def append(index: int) -> int:
            offset = await log.append_async(b"r%d" % index)
            assert log.durable_offset > offset  # durable before it returns
            return offset

        async def main() -> list[int]:
            return await asyncio.gather(*(append(i) for i in range(appenders)))

        offsets = asyncio.run(main())
        assert sorted(offsets) == list(range(appenders))
        assert log.durable_offset == appenders
        assert 1 <= counter.calls <= 2  # one round for the first, one for all the others
        log.append(b"s")  # the synchronous append still fsyncs on its own
        assert counter.calls <= 3 and log.durable_offset == appenders + 1


def test_group_commit_flushes_early_when_the_batch_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SegmentLog(
        tmp_path, fsync="batch", batch_delay_ms=5_000, batch_records_max=8, pending_records_max=64
    ) as log:

        async def main() -> list[list[int]]:
            batches = [log.append_many_async([b"a", b"b"]) for _ in range(4)]
            return await asyncio.wait_for(asyncio.gather(*batches), timeout=4)

        results = asyncio.run(main())  # would take 5 s if it waited for the window
        assert sorted(offset for batch in results for offset in batch) == list(range(8))
        assert log.durable_offset == 8


def test_group_commit_refuses_too_many_pending(tmp_path: Path) -> None:
    clock = ManualClock()
    with SegmentLog(
        tmp_path,
        fsync="batch",
        batch_records_max=2,
        pending_records_max=4,
        clock=clock,
    ) as log:
        log.append_many([b"a", b"b", b"c"])  # written, not durable: the window has not passed
        with pytest.raises(Overloaded) as raised:
            asyncio.run(log.append_many_async([b"d", b"e"]))
        assert raised.value.retry_after_ms >= 1
        assert log.next_offset == 3
        with pytest.raises(InvalidArgument):
            asyncio.run(log.append_many_async([b"x"] * 5))
        assert asyncio.run(log.append_async(b"d")) == 3
        assert log.durable_offset == 4


def test_failed_write_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SegmentLog(tmp_path) as log:
        log.append(b"before")
        real_pwrite = os.pwrite

        def half_then_fail(descriptor: int, data: bytes, position: int) -> int:
            real_pwrite(descriptor, data[: len(data) // 2], position)
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "pwrite", half_then_fail)
        with pytest.raises(Unavailable):
            log.append(b"lost" * 10)
        monkeypatch.undo()
        assert log.next_offset == 1
        assert log.append(b"after") == 1
    with SegmentLog(tmp_path) as log:
        assert log.recovery.clean
        assert list(log.iter_from(0)) == [(0, b"before"), (1, b"after")]


def test_failed_fsync_makes_the_log_refuse_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SegmentLog(tmp_path)

    def failing(descriptor: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing, raising=False)
    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(Unavailable):
        log.append(b"a")
    assert log.durable_offset == 0
    with pytest.raises(FailedPrecondition, match="reopen"):
        log.append(b"b")
    with pytest.raises(FailedPrecondition):
        log.read(0)
    log.close()


def test_failed_group_commit_fsync_reaches_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SegmentLog(tmp_path, fsync="batch", batch_delay_ms=1) as log:

        def failing(descriptor: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing, raising=False)

        async def main() -> list[Any]:
            calls = (log.append_async(b"r") for _ in range(5))
            return await asyncio.gather(*calls, return_exceptions=True)

        results = asyncio.run(main())
        assert all(isinstance(result, Unavailable) for result in results)
        assert log.durable_offset == 0


def test_reads_check_checksums_after_open(tmp_path: Path) -> None:
    with SegmentLog(tmp_path) as log:
        log.append_many([b"first", b"second"])
        path = tmp_path / segment_files(tmp_path)[0]
        data = bytearray(path.read_bytes())
        data[HEADER_BYTES + 2] ^= 0x01  # inside the payload of record 0
        path.write_bytes(bytes(data))
        with pytest.raises(Corruption):
            log.read(0)
        with pytest.raises(Corruption):
            list(log.iter_from(0))
        assert log.read(1) == b"second"


def test_repr_and_stats(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, fsync="never")
    log.append_many([b"ab", b"cd"])
    stats = log.stats()
    assert (stats.records_appended, stats.bytes_appended, stats.next_offset) == (2, 4, 2)
    assert "next_offset=2" in repr(log)
    log.close()
    assert "closed" in repr(log)


def test_group_commit_across_segment_rolls(tmp_path: Path) -> None:
    options: dict[str, Any] = {"fsync": "batch", "batch_delay_ms": 1, "segment_bytes_max": 200}
    with SegmentLog(tmp_path, **options) as log:

        async def writer(name: int) -> list[int]:
            return [await log.append_async(b"%d-%d" % (name, step)) for step in range(10)]

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(writer(name) for name in range(20)))

        per_writer = asyncio.run(main())
        assert log.durable_offset == 200 and log.stats().segments > 10
        written = {
            offset: b"%d-%d" % (name, step)
            for name, offsets in enumerate(per_writer)
            for step, offset in enumerate(offsets)
        }
    with SegmentLog(tmp_path, **options) as log:
        assert log.recovery.clean
        assert dict(log.iter_from(0)) == written


def test_logs_in_one_commit_group_share_rounds(tmp_path: Path) -> None:
    group = GroupCommitter(batch_delay_ms=20)
    logs = [
        SegmentLog(tmp_path / f"p{index}", fsync="batch", commit_group=group) for index in range(4)
    ]

    async def main() -> list[int]:
        calls = (logs[i % 4].append_async(b"r%d" % i) for i in range(64))
        return await asyncio.gather(*calls)

    offsets = asyncio.run(main())
    assert sorted(offsets) == sorted(i // 4 for i in range(64))
    assert [log.durable_offset for log in logs] == [16] * 4
    assert 1 <= group.fsync_rounds <= 2  # four logs' records made durable together
    for log in logs:
        log.close()


def test_a_failing_log_in_a_commit_group_fails_only_its_own_waiters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = GroupCommitter()
    good = SegmentLog(tmp_path / "good", fsync="batch", commit_group=group)
    bad = SegmentLog(tmp_path / "bad", fsync="batch", commit_group=group)
    bad_descriptor = bad._active.descriptor
    real = os.fdatasync

    def failing_for_bad(descriptor: int) -> None:
        if descriptor == bad_descriptor:
            raise OSError(errno.EIO, "Input/output error")
        real(descriptor)

    monkeypatch.setattr(os, "fdatasync", failing_for_bad, raising=False)

    async def main() -> list[Any]:
        calls = [good.append_async(b"g"), bad.append_async(b"b"), good.append_async(b"h")]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, failed, second = asyncio.run(main())
    assert (first, second) == (0, 1) and good.durable_offset == 2
    assert isinstance(failed, Unavailable) and bad.durable_offset == 0
    good.close()
    bad.close()  # a failed log closes without another fsync


def test_group_commit_times_a_threaded_round_without_the_hand_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round handed to a worker thread is timed by its fsyncs alone: on busy cores the wait
    for the thread (here 5 ms of clock per hand-off) must not keep quick rounds off the loop."""
    clock = ManualClock()
    real_to_thread = asyncio.to_thread

    async def slow_hand_off(function: Any, /, *args: Any, **kwargs: Any) -> Any:
        clock.advance(0.005)  # the thread starts late
        return await real_to_thread(function, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", slow_hand_off)
    group = GroupCommitter(inline_below_ms=2.0, clock=clock)
    group.round_seconds = 0.01  # a slow disk moved the rounds to the thread earlier
    with SegmentLog(tmp_path, fsync="batch", commit_group=group) as log:

        async def appends(count: int) -> list[int]:
            return [await log.append_async(b"r") for _ in range(count)]

        asyncio.run(appends(30))  # quick fsyncs (no clock) bring the average down
        assert group.inline_rounds > 0
        assert group.round_seconds is not None and group.round_seconds < 0.002
        assert log.durable_offset == 30


def test_group_commit_runs_quick_rounds_inline_and_slow_ones_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_threads: set[int] = set()
    fsync_threads: list[int] = []
    delay = {"s": 0.0}
    real = os.fsync
    # Rounds are timed on a ManualClock that only the fake disk moves: with real time, a loaded
    # machine (load 15) made even the quick rounds look slow and none ran inline.
    clock = ManualClock()

    def timed(descriptor: int) -> None:
        fsync_threads.append(threading.get_ident())
        clock.advance(delay["s"])
        real(descriptor)

    monkeypatch.setattr(os, "fdatasync", timed, raising=False)
    group = GroupCommitter(inline_below_ms=2.0, clock=clock)
    with SegmentLog(tmp_path, fsync="batch", commit_group=group) as log:

        async def appends(count: int) -> list[int]:
            loop_threads.add(threading.get_ident())
            return [await log.append_async(b"r") for _ in range(count)]

        asyncio.run(appends(10))  # quick fsyncs: after the first round, inline
        assert group.inline_rounds >= 8
        assert set(fsync_threads[-8:]) <= loop_threads
        delay["s"] = 0.02  # the disk slows down: rounds leave the loop
        fsync_threads.clear()
        asyncio.run(appends(10))
        assert fsync_threads[-1] not in loop_threads
        assert group.round_seconds is not None and group.round_seconds > 0.002
        delay["s"] = 0.0  # and it recovers: rounds come back
        inline_before = group.inline_rounds
        asyncio.run(appends(40))
        assert group.inline_rounds > inline_before
        assert log.durable_offset == 60
