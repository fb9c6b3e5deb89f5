"""``blocks.core.snapshot_log``: a state rebuilt from its snapshot plus the records after it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import Corruption, InvalidArgument
from blocks.core.snapshot_log import SnapshotLog


class Tally:
    """The smallest owner: a dict of counts, changed by ``[key, delta]`` records."""

    def __init__(self, directory: Path, snapshot_records: int = 3) -> None:
        self.counts: dict[str, int] = {}
        self.replayed = 0
        self.storage = SnapshotLog(
            str(directory),
            "tally",
            fsync="always",
            snapshot_records=snapshot_records,
            snapshot_bytes_max=1 << 20,
        )

    def open(self) -> None:
        self.storage.open(self.restore, self.replay)

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise InvalidArgument("not a tally")
        self.counts = dict(state)

    def replay(self, record: Any) -> None:
        key, delta = record
        self.counts[key] = self.counts.get(key, 0) + delta
        self.replayed += 1

    async def add(self, key: str, delta: int) -> None:
        self.replay([key, delta])
        await self.storage.append([key, delta])
        self.storage.maybe_snapshot(lambda: self.counts)


def test_reopen_restores_the_snapshot_and_replays_only_what_follows(tmp_path: Path) -> None:
    tally = Tally(tmp_path)
    tally.open()

    async def adds() -> None:
        for number in range(7):
            await tally.add("k" if number % 2 else "j", number)

    asyncio.run(adds())
    assert tally.storage.snapshots == 2  # after the 3rd and the 6th record
    expected = dict(tally.counts)
    tally.storage.close(None)  # as a crash leaves it: the 7th record is only in the log
    again = Tally(tmp_path)
    again.open()
    assert again.counts == expected and again.replayed == 1
    again.storage.close(lambda: again.counts)
    last = Tally(tmp_path)
    last.open()
    assert last.counts == expected and last.replayed == 0


def test_a_damaged_snapshot_is_corruption_naming_the_file(tmp_path: Path) -> None:
    tally = Tally(tmp_path)
    tally.open()
    asyncio.run(tally.add("k", 1))
    tally.storage.close(lambda: tally.counts)
    (tmp_path / "snapshot").write_bytes(b"\x93\x01\x00")  # a truncated msgpack array
    with pytest.raises(Corruption, match="snapshot"):
        Tally(tmp_path).open()


def test_a_state_its_owner_refuses_is_corruption(tmp_path: Path) -> None:
    tally = Tally(tmp_path)
    tally.open()
    tally.storage.close(lambda: ["not", "a", "dict"])
    with pytest.raises(Corruption, match="not a tally"):
        Tally(tmp_path).open()


def test_limits_and_use_before_open_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        Tally(tmp_path, snapshot_records=0)
    with pytest.raises(InvalidArgument, match="not open"):
        asyncio.run(Tally(tmp_path).storage.append(["k", 1]))
