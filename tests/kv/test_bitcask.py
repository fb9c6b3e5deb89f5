"""Bitcask unit tests: limits, options, locking, group commit, merge and its crash points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import FailedPrecondition, InvalidArgument
from blocks.kv import Bitcask, KeyValueStore
from blocks.kv.engine import compaction as merge_module
from blocks.kv.engine.files import list_store
from blocks.kv.engine.format import decode_hints, scan_records
from blocks.kv.limits import KEY_BYTES_MAX


def test_round_trip_and_protocol(tmp_path: Path) -> None:
    with Bitcask.open(tmp_path, clock=ManualClock()) as store:
        assert isinstance(store, KeyValueStore)
        assert store.get("missing") is None
        store.put("é", b"accent")
        store.put(b"", b"")
        assert store.get("é".encode()) == b"accent"
        assert store.get(b"") == b""
        assert store.delete("é") is True
        assert store.delete("é") is False
        assert store.keys() == [b""]
        assert len(store) == 1 and b"" in store


def test_limits_are_inclusive_and_refusals_write_nothing(tmp_path: Path) -> None:
    with Bitcask.open(tmp_path, value_bytes_max=100) as store:
        store.put(b"k" * KEY_BYTES_MAX, b"v" * 100)
        size_before = store.stats().total_bytes
        with pytest.raises(InvalidArgument):
            store.put(b"k" * (KEY_BYTES_MAX + 1), b"v")
        with pytest.raises(InvalidArgument):
            store.put(b"k", b"v" * 101)
        with pytest.raises(InvalidArgument):
            store.put_many([(b"ok", b"v"), (b"bad", b"v" * 101)])
        with pytest.raises(InvalidArgument):
            store.put_many([(b"ok", b"v"), (b"bad",)])  # type: ignore[list-item]
        with pytest.raises(InvalidArgument):
            store.put("\udcff", b"v")  # lone surrogate: not UTF-8 encodable
        assert store.stats().total_bytes == size_before
        assert store.get(b"ok") is None


@pytest.mark.parametrize(
    "options",
    [
        {"sync": "sometimes"},
        {"value_bytes_max": -1},
        {"file_bytes_max": 0},
        {"sync": "batch", "batch_delay_ms": 5_000.0},
        {"batch_max": 0},
    ],
)
def test_bad_options_are_refused_and_release_the_directory(tmp_path: Path, options: dict) -> None:
    with pytest.raises(InvalidArgument):
        Bitcask.open(tmp_path, **options)
    Bitcask.open(tmp_path).close()


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = Bitcask.open(tmp_path)
    store.close()
    store.close()
    with pytest.raises(FailedPrecondition):
        store.put(b"k", b"v")
    with pytest.raises(FailedPrecondition):
        store.get(b"k")


def test_second_writer_is_refused_in_process_and_across_processes(tmp_path: Path) -> None:
    with Bitcask.open(tmp_path):
        with pytest.raises(FailedPrecondition):
            Bitcask.open(tmp_path)
        code = (
            "import sys\nfrom blocks.kv import Bitcask\nfrom blocks.core.errors import "
            "FailedPrecondition\ntry:\n    Bitcask.open(sys.argv[1])\nexcept FailedPrecondition:"
            "\n    sys.exit(3)\n"
        )
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=30)
        assert result.returncode == 3
    Bitcask.open(tmp_path).close()


def test_group_commit_shares_fsyncs_between_threads(tmp_path: Path) -> None:
    threads_count, puts_each = 8, 25
    with Bitcask.open(tmp_path, sync="batch", batch_delay_ms=2.0) as store:
        barrier = threading.Barrier(threads_count)

        def writer(number: int) -> None:
            barrier.wait()
            for i in range(puts_each):
                store.put(b"%d-%d" % (number, i), b"v")
                if i % 5 == 0:  # deletes take the same path under the store lock
                    assert store.delete(b"%d-%d" % (number, i))

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        fsyncs = store.stats().fsyncs
    assert fsyncs < threads_count * puts_each / 2, fsyncs
    with Bitcask.open(tmp_path) as store:
        assert len(store) == threads_count * puts_each * 4 // 5


def _fill(store: Bitcask, rounds: int = 5) -> dict[bytes, bytes]:
    model: dict[bytes, bytes] = {}
    for round_number in range(rounds):
        for i in range(20):
            key, value = b"key-%d" % i, b"value-%d-%d" % (i, round_number)
            store.put(key, value)
            model[key] = value
        store.delete(b"key-%d" % round_number)
        model.pop(b"key-%d" % round_number, None)
    return model


def _contents(store: Bitcask) -> dict[bytes, bytes | None]:
    keys = store.keys()  # a Bitcask is not iterable; keys() is its snapshot
    return {key: store.get(key) for key in keys}


def test_merge_reclaims_space_and_hints_agree_with_data(tmp_path: Path) -> None:
    with Bitcask.open(tmp_path, file_bytes_max=256) as store:
        model = _fill(store)
        before = store.stats()
        store.merge()
        after = store.stats()
        assert _contents(store) == model
        assert after.dead_bytes == 0 and after.total_bytes < before.total_bytes
    listing = list_store(tmp_path)
    assert listing.merge_outputs and set(listing.merge_outputs) == set(listing.hints)
    for file_id in listing.merge_outputs:
        data = (tmp_path / file_id.data_name()).read_bytes()
        hints = decode_hints(
            (tmp_path / file_id.hint_name()).read_bytes(), key_len_max=KEY_BYTES_MAX
        )
        records, _, _ = scan_records(data, key_len_max=KEY_BYTES_MAX, value_len_max=1 << 20)
        assert hints is not None
        assert [(h.key, h.offset, h.record_size) for h in hints] == [
            (r.key, r.offset, r.size) for r in records
        ]
    with Bitcask.open(tmp_path) as store:
        assert store.recovery.hints_used == len(listing.merge_outputs)
        assert _contents(store) == model


def test_writes_during_merge_are_kept(tmp_path: Path) -> None:
    with Bitcask.open(tmp_path, sync="never", file_bytes_max=512) as store:
        model = _fill(store, rounds=20)
        stop = threading.Event()

        def keep_merging() -> None:
            while not stop.is_set():
                store.merge()

        merger = threading.Thread(target=keep_merging)
        merger.start()
        try:
            for i in range(400):
                key, value = b"key-%d" % (i % 37), b"late-%d" % i
                store.put(key, value)
                model[key] = value
                if i % 7 == 0:
                    store.delete(b"key-%d" % (i % 11))
                    model.pop(b"key-%d" % (i % 11), None)
        finally:
            stop.set()
            merger.join(timeout=60)
        assert _contents(store) == model
    with Bitcask.open(tmp_path) as store:
        assert _contents(store) == model


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_point", ["_commit_marker", "_swap"])
def test_crash_during_merge_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_point: str
) -> None:
    """Before the marker the old files win; after it the merged ones do. Same contents."""
    source = tmp_path / "store"
    store = Bitcask.open(source, file_bytes_max=256)
    model = _fill(store)

    def crash(*args: object) -> None:
        raise _Crash

    monkeypatch.setattr(merge_module, crash_point, crash)
    with pytest.raises(_Crash):
        store.merge()
    # Copy the directory as the crash left it, then open the copy as a restarted process.
    copy = tmp_path / "after-crash"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("LOCK"))
    store.close()
    with Bitcask.open(copy) as reopened:
        assert _contents(reopened) == model
    listing = list_store(copy)
    if crash_point == "_swap":
        assert listing.markers and listing.merge_outputs  # the committed merge won
    else:
        assert not listing.merge_outputs  # the uncommitted outputs were discarded
