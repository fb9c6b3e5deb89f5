"""A small object's GET answered by the event loop (``LocalBlobStore.read_cached``): only
from memory, never waiting for the store's lock, the access check first, and never stale
across overwrites and compaction (which moves the records the cache is keyed by)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from blocks.blob import LocalBlobStore
from blocks.core.errors import NotFound


class _Refused(Exception):
    pass


def _refuse() -> None:
    raise _Refused


def test_answers_from_memory_and_stays_right_across_compaction(tmp_path: Path) -> None:
    store = LocalBlobStore(
        tmp_path, chunk_bytes=128, inline_bytes_max=300, compact_bytes_min=20_000, fsync=False
    )
    store.create_bucket("bkt")
    expected: dict[str, bytes] = {}
    answered = 0
    for n in range(600):
        key = f"k{n % 9}"
        if n % 13 == 12:
            store.delete_object("bkt", key)
            expected.pop(key, None)
        else:
            expected[key] = bytes([n % 256]) * (100 + n % 400)  # inline and chunked
            store.put_object("bkt", key, expected[key])
        for name in (f"k{m}" for m in range(9)):
            if name not in expected:
                with pytest.raises(NotFound):
                    store.read_cached("bkt", name)
                continue
            found = store.read_cached("bkt", name)
            if found is None:  # chunked, or not cached since the last compaction
                assert len(expected[name]) > 300 or store.compactions
                assert store.get_object("bkt", name)[1] == expected[name]
                continue
            info, data = found
            answered += 1
            assert data == expected[name] and info.size == len(data)
    assert store.compactions >= 3 and answered > 1000
    store.put_object("bkt", "ranged", b"0123456789")
    ranged = store.read_cached("bkt", "ranged", (2, 5))
    assert ranged is not None and ranged[1] == b"2345" and ranged[0].size == 10
    store.close()


def test_never_waits_for_the_lock_and_checks_access_first(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    store.create_bucket("bkt")
    store.put_object("bkt", "small", b"s" * 4096)
    store.put_object("bkt", "large", b"l" * (store.inline_bytes_max + 1))
    checks: list[str] = []
    found = store.read_cached("bkt", "small", None, None, lambda: checks.append("check"))
    assert found is not None and found[1] == b"s" * 4096 and checks == ["check"]
    # Chunked objects and bad ranges are the worker thread's to answer: nothing checked.
    assert store.read_cached("bkt", "large", None, None, _refuse) is None
    assert store.read_cached("bkt", "small", (10, 5), None, _refuse) is None
    # A refused check wins over the object and over its absence.
    for bucket, key in (("bkt", "small"), ("bkt", "missing"), ("nowhere", "k")):
        with pytest.raises(_Refused):
            store.read_cached(bucket, key, None, None, _refuse)
    with pytest.raises(NotFound):
        store.read_cached("nowhere", "k", None, None, lambda: None)
    # While another thread holds the store's lock: no answer, no check, no wait.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        assert store.read_cached("bkt", "small", None, None, _refuse) is None
    finally:
        release.set()
        holder.join()
    assert store.read_cached("bkt", "small") is not None
    store.close()


def test_an_overwritten_object_is_not_kept(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, fsync=False)
    store.create_bucket("bkt")
    for n in range(50):
        store.put_object("bkt", "k", bytes([n]) * 1000)
    store.put_object("bkt", "other", b"o" * 500)
    assert store._inline_cache_bytes == 1500 and len(store._inline_cache) == 2
    found = store.read_cached("bkt", "k")
    assert found is not None and found[1] == bytes([49]) * 1000
    store.close()
