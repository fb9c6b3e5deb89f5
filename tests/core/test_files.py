"""``blocks.core.files``: small files and directories that survive a power cut whole."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from blocks.core.files import fsync_directory, make_directories, write_atomically
from blocks.testing.powerloss import PowerLossDisk


def test_write_atomically_survives_power_loss_with_strict_directories(tmp_path: Path) -> None:
    disk = PowerLossDisk(random.Random(0), strict_directories=True)
    disk.track(tmp_path)
    with disk.installed():
        make_directories(tmp_path / "a" / "b")
        write_atomically(tmp_path / "a" / "b" / "state", b"first")
        write_atomically(tmp_path / "a" / "b" / "state", b"second")
        with disk.power_cut(tmp_path):
            pass
    assert (tmp_path / "a" / "b" / "state").read_bytes() == b"second"


def test_a_plain_rename_is_lost_by_the_same_power_cut(tmp_path: Path) -> None:
    """The control: without the directory fsync the disk model does drop the new name."""
    disk = PowerLossDisk(random.Random(0), strict_directories=True)
    disk.track(tmp_path)
    with disk.installed():
        temporary = tmp_path / "state.tmp"
        with open(temporary, "wb") as file:
            file.write(b"new")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, tmp_path / "state")
        with disk.power_cut(tmp_path):
            pass
    assert not (tmp_path / "state").exists()


def test_write_atomically_keeps_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state"
    write_atomically(target, b"old")

    def full_disk(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"


def test_make_directories_leaves_existing_ones(tmp_path: Path) -> None:
    make_directories(tmp_path)
    make_directories(tmp_path / "x" / "y")
    make_directories(tmp_path / "x" / "y")
    assert (tmp_path / "x" / "y").is_dir()
    fsync_directory(tmp_path / "x")
