"""SegmentLog.truncate_from and SegmentLog.rewrite_segment: results, refusals, and what a power
cut at every fsync of either leaves behind (a prefix of the log; each segment old or new)."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from blocks.core.errors import FailedPrecondition, InvalidArgument, StorageError
from blocks.core.log import FsyncPolicy, SegmentLog
from blocks.core.log.rewrite import REWRITE_SUFFIX
from blocks.testing.powerloss import PowerLossDisk

RECORD = 40  # payload bytes; a frame is a little more, so three records fill a segment
SEGMENT_BYTES = 3 * (RECORD + 32)


def record(offset: int, tag: str = "r") -> bytes:
    return f"{tag}{offset}".encode().ljust(RECORD, b".")


def open_log(path: Path, fsync: FsyncPolicy = "always") -> SegmentLog:
    return SegmentLog(path, segment_bytes_max=SEGMENT_BYTES, fsync=fsync)


def filled(path: Path, count: int, fsync: FsyncPolicy = "always") -> SegmentLog:
    log = open_log(path, fsync)
    log.append_many([record(i) for i in range(count)])
    return log


def contents(log: SegmentLog) -> list[tuple[int, bytes]]:
    return list(log.iter_from(log.first_offset))


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
@pytest.mark.parametrize("cut", [0, 1, 4, 6, 9, 10])
def test_truncate_from_keeps_the_prefix_and_appends_go_on_at_the_cut(
    tmp_path: Path, fsync: FsyncPolicy, cut: int
) -> None:
    log = filled(tmp_path, 11, fsync)
    assert len(log.segment_bases) > 3
    assert log.truncate_from(cut) == cut
    assert log.next_offset == cut and log.durable_offset == cut
    assert contents(log) == [(i, record(i)) for i in range(cut)]
    assert log.append_many([record(i, "new") for i in range(cut, cut + 4)])[0] == cut
    expected = [(i, record(i)) for i in range(cut)]
    expected += [(i, record(i, "new")) for i in range(cut, cut + 4)]
    assert contents(log) == expected
    log.close()
    with open_log(tmp_path, fsync) as reopened:
        assert reopened.recovery.clean
        assert contents(reopened) == expected


def test_truncate_from_the_end_changes_nothing_and_outside_the_log_is_refused(
    tmp_path: Path,
) -> None:
    with filled(tmp_path, 7) as log:
        log.truncate_before(3)
        first = log.first_offset
        assert log.truncate_from(7) == 7 and log.next_offset == 7
        for offset in (first - 1, 8):
            with pytest.raises(InvalidArgument):
                log.truncate_from(offset)
        assert contents(log) == [(i, record(i)) for i in range(first, 7)]


@pytest.mark.parametrize("fsync", ["always", "batch", "never"])
def test_restart_at_empties_the_log_at_a_later_offset(tmp_path: Path, fsync: FsyncPolicy) -> None:
    log = filled(tmp_path, 8, fsync)
    with pytest.raises(InvalidArgument):
        log.restart_at(-1)
    log.restart_at(3)  # below the end too: every record goes
    assert (log.first_offset, log.next_offset, contents(log)) == (3, 3, [])
    log.restart_at(20)
    assert (log.first_offset, log.next_offset, log.durable_offset) == (20, 20, 20)
    assert log.segment_bases == (20,) and contents(log) == []
    assert log.append(b"after") == 20
    log.close()
    with open_log(tmp_path, fsync) as reopened:
        assert reopened.recovery.clean and contents(reopened) == [(20, b"after")]


@pytest.mark.parametrize("fsync", ["always", "never"])
def test_rewrite_segment_replaces_records_at_the_same_offsets(
    tmp_path: Path, fsync: FsyncPolicy
) -> None:
    log = filled(tmp_path, 10, fsync)
    bases = log.segment_bases
    base, end = bases[1], bases[2]
    reader = log.iter_from(0)
    assert next(reader) == (0, record(0))
    new = [b"x" * (offset % 3) for offset in range(base, end)]  # other sizes, one empty
    log.rewrite_segment(base, new)
    expected = [(i, record(i)) for i in range(10)]
    expected[base:end] = list(zip(range(base, end), new, strict=True))
    assert list(reader) == expected[1:]
    assert contents(log) == expected and log.segment_bases == bases
    assert [log.read(i) for i in range(base, end)] == new
    log.append(record(10))
    log.close()
    assert not any(name.endswith(REWRITE_SUFFIX) for name in os.listdir(tmp_path))
    with open_log(tmp_path, fsync) as reopened:
        assert reopened.recovery.clean
        assert contents(reopened) == [*expected, (10, record(10))]


def test_rewrite_segment_refuses_the_active_segment_a_wrong_count_and_no_segment(
    tmp_path: Path,
) -> None:
    with filled(tmp_path, 8) as log:
        bases = log.segment_bases
        span = bases[1] - bases[0]
        for base, count in ((bases[-1], 8 - bases[-1]), (bases[0], span + 1), (1, span)):
            with pytest.raises(InvalidArgument):
                log.rewrite_segment(base, [b"x"] * count)
        assert contents(log) == [(i, record(i)) for i in range(8)]


def test_a_leftover_temporary_file_is_ignored_and_overwritten(tmp_path: Path) -> None:
    with filled(tmp_path, 8) as log:
        base = log.segment_bases[1]
        span = log.segment_bases[2] - base
    name = f"{base:020d}.log"
    (tmp_path / (name + REWRITE_SUFFIX)).write_bytes(b"half a segment")
    with open_log(tmp_path) as log:
        assert log.recovery.clean and contents(log) == [(i, record(i)) for i in range(8)]
        log.rewrite_segment(base, [b"y"] * span)
        assert [log.read(i) for i in range(base, base + span)] == [b"y"] * span
    assert not (tmp_path / (name + REWRITE_SUFFIX)).exists()


def test_a_failed_rename_leaves_the_segment_old_and_the_log_refusing_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = filled(tmp_path, 8)
    base = log.segment_bases[1]
    span = log.segment_bases[2] - base

    def failing_replace(source: str, target: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(StorageError):
        log.rewrite_segment(base, [b"z"] * span)
    monkeypatch.undo()
    with pytest.raises(FailedPrecondition):
        log.read(0)
    log.close()
    with open_log(tmp_path) as reopened:
        assert contents(reopened) == [(i, record(i)) for i in range(8)]


@contextmanager
def cut_after(disk: PowerLossDisk, root: Path, fsyncs: int) -> Iterator[list[int]]:
    """Freeze ``root``'s durable image after the next ``fsyncs`` fsyncs (files or directories)."""
    inner = os.fsync
    inner_data = getattr(os, "fdatasync", os.fsync)
    seen = [0]

    def counted(real: Callable[[int], None]) -> Callable[[int], None]:
        def fsync(descriptor: int) -> None:
            real(descriptor)
            seen[0] += 1
            if seen[0] == fsyncs:
                disk.cut_power(root)

        return fsync

    os.fsync = counted(inner)
    os.fdatasync = counted(inner_data)
    try:
        if fsyncs == 0:
            disk.cut_power(root)
        yield seen
    finally:
        os.fsync, os.fdatasync = inner, inner_data
    disk.restore(root)


def power_cut_outcomes(
    tmp_path: Path, change: Callable[[SegmentLog], None]
) -> list[list[tuple[int, bytes]]]:
    """What reopening finds after a power cut at each fsync ``change`` makes (and after all)."""
    outcomes = []
    for fsyncs in range(40):
        root = tmp_path / str(fsyncs)
        filled(root, 10).close()
        disk = PowerLossDisk(random.Random(fsyncs), torn_tail_probability=0.0)
        disk.track(root)
        with disk.installed():
            log = open_log(root)
            with cut_after(disk, root, fsyncs) as seen:
                change(log)
                done = seen[0] < fsyncs
                log.close()
            with open_log(root) as reopened:
                outcomes.append(contents(reopened))
        if done:
            return outcomes
    raise AssertionError("the change never finished")


def test_a_power_cut_during_truncate_from_leaves_a_prefix_without_holes(tmp_path: Path) -> None:
    outcomes = power_cut_outcomes(tmp_path, lambda log: log.truncate_from(4))
    full = [(i, record(i)) for i in range(10)]
    assert outcomes[0] == full and outcomes[-1] == full[:4]
    for outcome in outcomes:
        assert outcome == full[: len(outcome)] and len(outcome) >= 4


def test_a_power_cut_during_restart_at_leaves_a_prefix_or_the_restarted_log(
    tmp_path: Path,
) -> None:
    outcomes = power_cut_outcomes(tmp_path, lambda log: log.restart_at(30))
    full = [(i, record(i)) for i in range(10)]
    assert outcomes[0] == full and outcomes[-1] == []
    for outcome in outcomes:
        assert outcome == full[: len(outcome)]


def test_a_power_cut_during_rewrite_segment_leaves_it_old_or_new(tmp_path: Path) -> None:
    def rewrite(log: SegmentLog) -> None:
        base = log.segment_bases[1]
        log.rewrite_segment(base, [b"new"] * (log.segment_bases[2] - base))

    outcomes = power_cut_outcomes(tmp_path, rewrite)
    old = [(i, record(i)) for i in range(10)]
    assert outcomes[0] == old and outcomes[-1] != old
    for outcome in outcomes:
        assert outcome in (old, outcomes[-1])


def test_a_group_commit_fsync_in_flight_during_a_cut_claims_nothing_past_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SegmentLog(
        tmp_path, segment_bytes_max=SEGMENT_BYTES, fsync="batch", batch_delay_ms=10_000
    )
    log.append_many([record(i) for i in range(10)])  # the window never passes: not fsynced
    entered, release = threading.Event(), threading.Event()
    real = getattr(os, "fdatasync", os.fsync)

    def gated(descriptor: int) -> None:
        if not entered.is_set():
            entered.set()
            release.wait(10)
        real(descriptor)

    monkeypatch.setattr(os, "fdatasync", gated)
    commit = threading.Thread(target=log._sync_for_commit)  # the group commit's worker
    commit.start()
    assert entered.wait(10)
    cut = threading.Thread(target=log.truncate_from, args=(4,))
    cut.start()
    release.set()
    cut.join(10)
    commit.join(10)
    assert (log.next_offset, log.durable_offset) == (4, 4)
    log.close()
