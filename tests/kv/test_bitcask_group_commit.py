"""Bitcask's group commit seen from the store: one write per group, the keydir learns a record
only once it is durable, deletes answer in log order, and close writes what is queued."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blocks.kv.engine import bitcask as bitcask_module
from blocks.kv.engine.bitcask import Bitcask

WAIT_S = 10.0


class _HeldFsync:
    """``os.fdatasync`` that blocks while ``hold`` is set, reporting when it has started."""

    def __init__(self) -> None:
        self.real = os.fdatasync
        self.hold = threading.Event()
        self.released = threading.Event()
        self.started = threading.Event()

    def __call__(self, fd: int) -> None:
        if self.hold.is_set():
            self.started.set()
            assert self.released.wait(WAIT_S), "the test never released the fsync"
        self.real(fd)


@pytest.fixture
def held_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[_HeldFsync]:
    held = _HeldFsync()
    monkeypatch.setattr(os, "fdatasync", held)
    yield held
    held.released.set()


def _pending(store: Bitcask) -> int:
    with store._lock:
        return len(store._group._pending)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _start(target: Callable[[], object], results: list[object]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(target()))
    thread.start()
    return thread


def _queue_behind_a_held_fsync(
    store: Bitcask, held: _HeldFsync, calls: list[Callable[[], object]]
) -> tuple[list[threading.Thread], list[list[object]]]:
    """Start a put whose fsync is held, then ``calls`` one by one, each queued before the
    next starts (so they are queued in this order)."""
    held.hold.set()
    first = _start(lambda: store.put(b"first", b"1"), [])
    assert held.started.wait(WAIT_S)
    threads, results = [first], []
    for index, call in enumerate(calls):
        result: list[object] = []
        threads.append(_start(call, result))
        results.append(result)
        _until(lambda index=index: _pending(store) == index + 1)
    return threads, results


def _release(held: _HeldFsync, threads: list[threading.Thread]) -> None:
    held.hold.clear()
    held.released.set()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not any(thread.is_alive() for thread in threads)


def test_a_group_of_puts_is_one_write(
    tmp_path: Path, held_fsync: _HeldFsync, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = bitcask_module.pwrite_all

    def counting(fd: int, data: bytes, position: int) -> None:
        writes.append(len(data))
        real(fd, data, position)

    with Bitcask.open(tmp_path, sync="always") as store:
        monkeypatch.setattr(bitcask_module, "pwrite_all", counting)
        puts = [lambda n=n: store.put(b"k%d" % n, b"v%d" % n) for n in range(7)]
        threads, _ = _queue_behind_a_held_fsync(store, held_fsync, puts)
        _release(held_fsync, threads)
        assert len(writes) == 2, writes  # the held put's, then the seven queued in one
        assert [store.get(b"k%d" % n) for n in range(7)] == [b"v%d" % n for n in range(7)]
        assert store.stats().fsyncs == 2
    with Bitcask.open(tmp_path) as reopened:
        assert len(reopened) == 8


def test_a_read_never_sees_a_write_before_its_fsync(tmp_path: Path, held_fsync: _HeldFsync) -> None:
    with Bitcask.open(tmp_path, sync="always") as store:
        store.put(b"k", b"old")
        held_fsync.hold.set()
        writers = [
            _start(lambda: store.put(b"k", b"new"), []),
            _start(lambda: store.put(b"fresh", b"x"), []),
        ]
        assert held_fsync.started.wait(WAIT_S)
        # Neither write is acknowledged yet, so neither is visible.
        assert store.get(b"k") == b"old"
        assert store.get(b"fresh") is None and b"fresh" not in store and len(store) == 1
        _release(held_fsync, writers)
        assert (store.get(b"k"), store.get(b"fresh")) == (b"new", b"x")


def test_deletes_queued_together_answer_in_log_order(
    tmp_path: Path, held_fsync: _HeldFsync
) -> None:
    with Bitcask.open(tmp_path, sync="always") as store:
        store.put(b"gone", b"1")
        calls: list[Callable[[], object]] = [
            lambda: store.put(b"k", b"v"),
            lambda: store.delete(b"k"),  # sees the put queued before it
            lambda: store.delete(b"k"),  # sees the delete queued before it
            lambda: store.delete(b"gone"),
            lambda: store.delete(b"gone"),
            lambda: store.delete(b"never"),
        ]
        threads, results = _queue_behind_a_held_fsync(store, held_fsync, calls)
        _release(held_fsync, threads)
        assert results == [[None], [True], [False], [True], [False], [False]]
        assert store.get(b"k") is None and store.get(b"gone") is None
    with Bitcask.open(tmp_path) as reopened:
        assert sorted(reopened.keys()) == [b"first"]


def test_close_writes_the_queued_puts_first(tmp_path: Path, held_fsync: _HeldFsync) -> None:
    store = Bitcask.open(tmp_path, sync="always")
    puts = [lambda n=n: store.put(b"k%d" % n, b"v") for n in range(3)]
    threads, results = _queue_behind_a_held_fsync(store, held_fsync, puts)
    closer = threading.Thread(target=store.close)
    closer.start()
    _until(lambda: store._closing)
    _release(held_fsync, [*threads, closer])
    assert results == [[None], [None], [None]]
    with Bitcask.open(tmp_path) as reopened:
        assert sorted(reopened.keys()) == [b"first", b"k0", b"k1", b"k2"]
