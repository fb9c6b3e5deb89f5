"""GroupCommit: a write returns only once an fsync that covers it has ended, and a failed
fsync is never papered over by a later one that succeeds."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from blocks.kv.engine.group_commit import GroupCommit


class _Store:
    """The store's side of the contract: numbered writes and a ``(fd, seq)`` snapshot."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self.lock = threading.Lock()
        self.seq = 0
        self.synced_ends: list[int] = []  # last_seq of every fsync that ended, in order

    def write(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return os.dup(self.fd), self.seq


def _fdatasync_failing(calls: list[int], failing: set[int]) -> object:
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        if len(calls) in failing:
            raise OSError(5, "Input/output error")
        real(fd)

    return fdatasync


def test_a_failed_fsync_fails_every_later_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _Store(tmp_path / "f")
    group = GroupCommit(store.snapshot, delay_s=0.0, batch_max=8)
    calls: list[int] = []
    monkeypatch.setattr(os, "fdatasync", _fdatasync_failing(calls, failing={2}))
    group.begin_write()
    group.wait_durable(store.write())  # fsync 1 succeeds
    group.begin_write()
    with pytest.raises(OSError):
        group.wait_durable(store.write())  # fsync 2 fails
    # The pages fsync 2 was to write may be gone; a third fsync would succeed without them,
    # so a write that fsync 2 did not cover must not be acknowledged by it.
    group.begin_write()
    with pytest.raises(OSError):
        group.wait_durable(store.write())
    assert len(calls) == 2
    group.wait_durable(1)  # covered before the failure: still fine


@pytest.mark.parametrize("delay_s", [0.0, 0.002])
def test_every_wait_returns_after_a_covering_fsync_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, delay_s: float
) -> None:
    store = _Store(tmp_path / "f")
    real = os.fdatasync
    covers: dict[int, int] = {}  # snapshot fd -> the seq its fsync covers
    durable = [0]  # the highest seq an ended fsync (or a "rotation") covered
    durable_lock = threading.Lock()

    def snapshot() -> tuple[int, int]:
        fd, seq = store.snapshot()
        covers[fd] = seq
        return fd, seq

    def fdatasync(fd: int) -> None:
        time.sleep(0.0005)
        real(fd)
        with durable_lock:
            durable[0] = max(durable[0], covers.pop(fd))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    group = GroupCommit(snapshot, delay_s=delay_s, batch_max=4)
    violations: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        rng = random.Random(number)
        try:
            for _ in range(40):
                group.begin_write()
                seq = store.write()
                if rng.random() < 0.05:  # a rotation: the store fsyncs itself and says so
                    with store.lock:
                        real(store.fd)
                        covered = store.seq
                    with durable_lock:
                        durable[0] = max(durable[0], covered)
                    group.mark_durable(covered)
                group.wait_durable(seq)
                with durable_lock:
                    if durable[0] < seq:
                        violations.append((seq, durable[0]))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer never returned"
    assert not errors and not violations, (errors, violations[:5])
    assert group.fsync_count < 8 * 40  # shared
    os.close(store.fd)
