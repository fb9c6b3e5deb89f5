"""core.log after power loss: each fsync policy keeps what it promises, and no more is claimed.

* ``always``: every record whose ``append`` returned survives the cut, byte for byte.
* ``never`` with ``sync()`` now and then: every record below the ``durable_offset`` at the cut
  survives; later ones may be gone (a torn tail is cut on open), and no read ever returns
  bytes that were not appended at that offset.

The disk keeps random torn tails (sometimes zeroed) and drops segment files whose directory
entry was never fsynced. Each seed drives records, sync points and the moment of the cut.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from blocks.core.errors import Corruption
from blocks.core.log import FsyncPolicy, SegmentLog
from blocks.core.log import storage as log_storage
from blocks.testing.powerloss import PowerLossDisk

SEGMENT_BYTES_MAX = 200
CUTS_PER_SEED = 3


def _records(rng: random.Random, count: int) -> list[bytes]:
    return [rng.randbytes(rng.randrange(0, 40)) for _ in range(count)]


def _run(seed: int, root: Path, fsync: FsyncPolicy) -> list[tuple[int, int, int]]:
    """Append, cut power, reopen, check; a few times. Returns, per cut, the durable offset
    at the cut, the records found on reopening, and the records appended."""
    rng = random.Random(seed)
    disk = PowerLossDisk(random.Random(seed + 1), torn_tail_probability=0.7)
    disk.track(root)
    written: list[bytes] = []
    outcomes = []
    with disk.installed():
        for _ in range(CUTS_PER_SEED):
            log = SegmentLog(root, fsync=fsync, segment_bytes_max=SEGMENT_BYTES_MAX)
            assert log.next_offset == len(written), "reopen should find what the last check saw"
            for record in _records(rng, rng.randrange(1, 30)):
                assert log.append(record) == len(written)
                written.append(record)
                if fsync == "never" and rng.random() < 0.15:
                    log.sync()
            durable = log.durable_offset
            assert fsync != "always" or durable == len(written)
            with disk.power_cut(root):
                log.close()  # the dead process's close: its fsyncs reach nothing
            with SegmentLog(root, fsync=fsync, segment_bytes_max=SEGMENT_BYTES_MAX) as reopened:
                found = reopened.next_offset
                assert reopened.first_offset == 0
                assert durable <= found <= len(written), (seed, durable, found, len(written))
                for offset in range(found):
                    try:
                        assert reopened.read(offset) == written[offset], (seed, offset)
                    except Corruption:
                        assert offset >= durable, (seed, offset, "durable record unreadable")
                reopened.sync()
            appended = len(written)
            del written[found:]  # what the next round builds on
            outcomes.append((durable, found, appended))
    return outcomes


@pytest.mark.parametrize("seed", range(12))
def test_fsync_always_loses_nothing_acknowledged(seed: int, tmp_path: Path) -> None:
    for durable, found, _ in _run(seed, tmp_path / "log", "always"):
        assert found == durable


@pytest.mark.parametrize("seed", range(12))
def test_fsync_never_keeps_what_sync_made_durable_and_returns_no_corrupt_record(
    seed: int, tmp_path: Path
) -> None:
    _run(seed, tmp_path / "log", "never")


def test_fsync_never_does_lose_unsynced_records(tmp_path: Path) -> None:
    """The disk is not a no-op: across seeds, records appended after the last sync do go."""
    rounds = [r for seed in range(6) for r in _run(seed, tmp_path / str(seed), "never")]
    assert any(found < appended for _, found, appended in rounds)
    assert any(durable < found for durable, found, _ in rounds)  # torn tails that survived


def test_a_log_that_skips_its_fsync_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break the log on purpose (fsync skipped under ``always``): the check must fail."""
    monkeypatch.setattr(log_storage, "_fsync_data", lambda descriptor: None)
    with pytest.raises(AssertionError):
        for seed in range(6):
            for durable, found, _ in _run(seed, tmp_path / str(seed), "always"):
                assert found == durable


async def _batch_round(root: Path, rng: random.Random, disk: PowerLossDisk) -> None:
    written: list[bytes] = []
    for _ in range(CUTS_PER_SEED):
        log = SegmentLog(root, fsync="batch", segment_bytes_max=SEGMENT_BYTES_MAX)
        assert log.next_offset == len(written)
        acknowledged = len(written)
        for _ in range(rng.randrange(1, 4)):  # groups of concurrent, awaited appends
            records = _records(rng, rng.randrange(1, 8))
            offsets = await asyncio.gather(*(log.append_async(r) for r in records))
            assert sorted(offsets) == list(range(len(written), len(written) + len(records)))
            written.extend(r for _, r in sorted(zip(offsets, records, strict=True)))
            acknowledged = len(written)
        for record in _records(rng, rng.randrange(0, 5)):  # appended, never awaited durable
            log.append(record)
            written.append(record)
        with disk.power_cut(root):
            log.close()
        with SegmentLog(root, fsync="batch", segment_bytes_max=SEGMENT_BYTES_MAX) as reopened:
            found = reopened.next_offset
            assert acknowledged <= found <= len(written), (acknowledged, found, len(written))
            for offset in range(acknowledged):
                assert reopened.read(offset) == written[offset]
        del written[found:]


@pytest.mark.parametrize("seed", range(6))
def test_fsync_batch_keeps_every_awaited_append(seed: int, tmp_path: Path) -> None:
    disk = PowerLossDisk(random.Random(seed), torn_tail_probability=0.7)
    disk.track(tmp_path / "log")
    with disk.installed():
        asyncio.run(_batch_round(tmp_path / "log", random.Random(seed), disk))
