"""A sequencer server restarted with its wall clock stepped back never hands out an ID below
one it handed out before (the fault kit's finding: it used to take the next worker id and
issue IDs about the step lower). Process tests with ``BLOCKS_CLOCK_OFFSET_MS``, and the
data-dir pieces in process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from blocks.core.clock import CLOCK_OFFSET_ENV
from blocks.core.errors import Corruption, FailedPrecondition, InvalidArgument, Unavailable
from blocks.sequencer.client import SequencerClient
from blocks.sequencer.datadir import DataDirLock, HighWater, plan_cover
from blocks.sequencer.lease_sources import LeaseFrom, parse_lease_from
from blocks.testing import ProcessCluster
from blocks.testing.servers import sequencer_spec


async def _take(cluster: ProcessCluster, count: int = 100) -> list[int]:
    async with SequencerClient(cluster.address("s"), token=cluster.token) as client:
        return await client.next_ids(count)


@pytest.mark.process
def test_restart_with_clock_stepped_back_never_issues_lower_ids(tmp_path: Path) -> None:
    with ProcessCluster(sequencer_spec(), ["s"], tmp_path) as cluster:
        cluster.start("s")
        before = asyncio.run(_take(cluster))
        # kill -9, back a minute: more than the generator waits for, so it refuses.
        cluster.set_env("s", {CLOCK_OFFSET_ENV: "-60000"})
        cluster.restart("s")
        try:
            after = asyncio.run(_take(cluster))
        except Unavailable as error:
            assert "clock moved backwards" in str(error)
            after = []
        assert all(value > max(before) for value in after), (max(before), min(after))
        # SIGTERM, back three seconds: within the wait, so it issues, above the old IDs.
        cluster.terminate("s")
        cluster.set_env("s", {CLOCK_OFFSET_ENV: "-3000"})
        cluster.start("s")
        again = asyncio.run(_take(cluster))
        assert min(again) > max(before)


def test_data_dir_lock_refuses_a_second_owner(tmp_path: Path) -> None:
    first, second = DataDirLock(str(tmp_path)), DataDirLock(str(tmp_path))
    first.acquire()
    with pytest.raises(FailedPrecondition, match="in use by another sequencer"):
        second.acquire()
    first.release()
    second.acquire()  # released (as by the kernel when a process dies): free again
    second.release()


def test_high_water_mark_is_persisted_ahead_and_only_when_reached(tmp_path: Path) -> None:
    assert plan_cover(0, 5, 10) == 15 and plan_cover(15, 14, 10) is None
    assert plan_cover(15, 15, 10) == 25
    mark = HighWater(str(tmp_path), ahead_ms=1000, fsync=False)
    assert mark.mark_ms == 0
    mark.cover(10_000)
    mark.cover(10_500)
    assert (mark.mark_ms, mark.writes) == (11_000, 1)
    assert HighWater(str(tmp_path), fsync=False).mark_ms == 11_000
    (tmp_path / "highwater.state").write_bytes(b"garbage")
    with pytest.raises(Corruption):
        HighWater(str(tmp_path))


def test_lease_from_parses_kv_and_file_and_rejects_the_rest() -> None:
    assert parse_lease_from("kv://a:1,b:2") == LeaseFrom(addresses=("a:1", "b:2"))
    assert parse_lease_from("file:///tmp/x") == LeaseFrom(directory="/tmp/x")
    for bad in ("kv://", "kv://a", "kv://a:0", "http://a:1", "file://rel", "a:1"):
        with pytest.raises(InvalidArgument):
            parse_lease_from(bad)
