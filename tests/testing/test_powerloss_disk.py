"""The power-loss disk itself: what survives a cut, file by file and directory by directory."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from blocks.core.errors import InvalidArgument
from blocks.testing.powerloss import PowerLossDisk


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write(path: Path, data: bytes, *, sync: bool, mode: str = "ab") -> None:
    with open(path, mode) as file:
        file.write(data)
        file.flush()
        if sync:
            os.fsync(file.fileno())


def _disk(tmp_path: Path, **options: float) -> PowerLossDisk:
    disk = PowerLossDisk(random.Random(1), **options)  # type: ignore[arg-type]
    disk.track(tmp_path)
    return disk


def test_unsynced_appends_are_dropped_and_synced_ones_kept(tmp_path: Path) -> None:
    disk = _disk(tmp_path, torn_tail_probability=0.0)
    with disk.installed():
        _write(tmp_path / "a", b"durable", sync=True)
        _fsync_directory(tmp_path)
        _write(tmp_path / "a", b"-lost", sync=False)
        with disk.power_cut(tmp_path):
            pass
    assert (tmp_path / "a").read_bytes() == b"durable"
    assert disk.last_report is not None
    assert disk.last_report.bytes_dropped == 5 and disk.last_report.files_restored == 1


def test_a_torn_tail_keeps_a_prefix_of_the_unsynced_bytes(tmp_path: Path) -> None:
    survivors = set()
    for seed in range(30):
        root = tmp_path / str(seed)
        disk = PowerLossDisk(random.Random(seed), torn_tail_probability=1.0)
        disk.track(root)
        with disk.installed():
            _write(root / "a", b"head", sync=True)
            _fsync_directory(root)
            _write(root / "a", b"0123456789", sync=False)
            with disk.power_cut(root):
                pass
        data = (root / "a").read_bytes()
        extra = data[4:]
        assert data.startswith(b"head")
        assert b"0123456789".startswith(extra) or extra == bytes(len(extra))
        survivors.add(len(extra))
    assert len(survivors) > 3  # the cut falls at many places


def test_fsyncs_after_the_cut_change_nothing(tmp_path: Path) -> None:
    disk = _disk(tmp_path, torn_tail_probability=0.0)
    with disk.installed():
        _write(tmp_path / "a", b"one", sync=True)
        _fsync_directory(tmp_path)
        with disk.power_cut(tmp_path):
            _write(tmp_path / "a", b"two", sync=True)  # the dying process's last words
    assert (tmp_path / "a").read_bytes() == b"one"
    assert disk.fsyncs_seen == 3


def test_strict_directories_lose_new_files_and_bring_back_deleted_ones(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"old data")
    disk = _disk(tmp_path)
    with disk.installed():
        _write(tmp_path / "new", b"synced data, no directory fsync", sync=True)
        os.unlink(tmp_path / "old")
        with disk.power_cut(tmp_path):
            pass
    assert sorted(os.listdir(tmp_path)) == ["old"]
    assert (tmp_path / "old").read_bytes() == b"old data"
    report = disk.last_report
    assert report is not None and report.files_removed == 1 and report.files_resurrected == 1


def test_lenient_directories_keep_entries_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "old").write_bytes(b"old data")
    disk = _disk(tmp_path, torn_tail_probability=0.0)
    disk.strict_directories = False
    with disk.installed():
        _write(tmp_path / "new", b"data", sync=False)
        os.unlink(tmp_path / "old")
        with disk.power_cut(tmp_path):
            pass
    assert sorted(os.listdir(tmp_path)) == ["new"]
    assert (tmp_path / "new").read_bytes() == b""  # never fsynced: durable as empty


def test_a_rename_carries_the_durable_content(tmp_path: Path) -> None:
    disk = _disk(tmp_path, torn_tail_probability=0.0)
    with disk.installed():
        _write(tmp_path / "target", b"before", sync=True, mode="wb")
        _fsync_directory(tmp_path)
        _write(tmp_path / "tmp", b"after", sync=True, mode="wb")
        os.replace(tmp_path / "tmp", tmp_path / "target")
        _fsync_directory(tmp_path)
        with disk.power_cut(tmp_path):
            pass
    assert sorted(os.listdir(tmp_path)) == ["target"]
    assert (tmp_path / "target").read_bytes() == b"after"


def test_a_rename_without_a_directory_fsync_is_undone(tmp_path: Path) -> None:
    disk = _disk(tmp_path, torn_tail_probability=0.0)
    with disk.installed():
        _write(tmp_path / "target", b"before", sync=True, mode="wb")
        _fsync_directory(tmp_path)
        _write(tmp_path / "tmp", b"after", sync=True, mode="wb")
        os.replace(tmp_path / "tmp", tmp_path / "target")
        with disk.power_cut(tmp_path):
            pass
    assert (tmp_path / "target").read_bytes() == b"before"


def test_files_outside_tracked_roots_are_left_alone(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    disk = PowerLossDisk(random.Random(0))
    disk.track(root)
    with disk.installed():
        _write(outside / "x", b"kept", sync=True)
        with disk.power_cut(root):
            pass
    assert (outside / "x").read_bytes() == b"kept"
    assert disk.fsyncs_seen == 0


def test_bad_arguments_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        PowerLossDisk(random.Random(0), torn_tail_probability=1.5)
    disk = PowerLossDisk(random.Random(0))
    disk.track(tmp_path / "a")
    with pytest.raises(InvalidArgument):
        disk.track(tmp_path / "a" / "inner")
    with pytest.raises(InvalidArgument):
        disk.cut_power(tmp_path / "b")
    assert os.fsync is not None
    real = os.fsync
    with disk.installed():
        assert os.fsync is not real
    assert os.fsync is real
