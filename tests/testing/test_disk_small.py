"""SmallDisk: a tmpfs of a few MiB that fills up (skipped cleanly where mounting is not allowed)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from blocks.core.errors import InvalidArgument
from blocks.testing import SmallDisk, small_disk_unavailable


def test_a_small_disk_fills_up(tmp_path: Path) -> None:
    reason = small_disk_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with SmallDisk(tmp_path / "mnt", 2) as disk:
        chunk = b"x" * 65536
        with pytest.raises(OSError) as full, (disk.directory / "fill").open("wb") as out:
            for _ in range(64):  # 4 MiB into 2 MiB
                out.write(chunk)
                out.flush()
        assert full.value.errno == errno.ENOSPC
    assert not disk.mounted and not (tmp_path / "mnt" / "fill").exists()


def test_sizes_are_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        SmallDisk(tmp_path, 0)
