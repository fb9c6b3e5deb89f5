"""What ``RedisKeyValueStore`` does beyond, and differently from, the kv contract: versions
and compare-and-set instead of siblings, and its errors (docs/adapters.md cites each test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.core.errors import Conflict, FailedPrecondition, PeerError, Unavailable
from blocks.testing.engines import RedisServer

redis_kv = pytest.importorskip("blocks.kv.adapters.redis", reason="redis not installed")
RedisKeyValueStore = redis_kv.RedisKeyValueStore


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisKeyValueStore]:
    kv = RedisKeyValueStore.open(redis_server.url, namespace=f"d{uuid.uuid4().hex[:10]}:")
    yield kv
    for key in list(kv.keys()):
        kv.delete(key)
    kv.close()


def test_concurrent_writes_are_refused_not_kept_as_siblings(store: RedisKeyValueStore) -> None:
    store.put(b"k", b"start")
    seen = store.get_versioned(b"k")
    assert seen.value == b"start" and seen.version is not None
    # Two writers both start from the same read: the first wins, the second is refused.
    first = store.compare_and_set(b"k", b"from-a", seen.version)
    with pytest.raises(Conflict):
        store.compare_and_set(b"k", b"from-b", seen.version)
    assert store.get_versioned(b"k").value == b"from-a"
    assert store.get_versioned(b"k").version == first
    # Blind puts: the last one wins, the other is gone (a Dynamo cluster keeps both).
    store.put(b"k", b"blind-1")
    store.put(b"k", b"blind-2")
    assert store.get(b"k") == b"blind-2"


def test_compare_and_set_on_an_absent_key(store: RedisKeyValueStore) -> None:
    assert store.get_versioned(b"new") == redis_kv.VersionedValue(None, None)
    version = store.compare_and_set(b"new", b"one", None)
    with pytest.raises(Conflict):
        store.compare_and_set(b"new", b"two", None)
    assert store.get(b"new") == b"one"
    assert store.get_versioned(b"new").version == version


def test_a_key_written_again_after_a_delete_has_a_new_version(
    store: RedisKeyValueStore,
) -> None:
    store.put(b"k", b"a")
    old = store.get_versioned(b"k").version
    assert store.delete(b"k")
    store.put(b"k", b"a")
    new = store.get_versioned(b"k").version
    assert new != old  # the same counter (1) with a fresh incarnation: no ABA
    with pytest.raises(Conflict):
        store.compare_and_set(b"k", b"b", old)


def test_put_many_with_a_repeated_key_ends_with_its_last_value(
    store: RedisKeyValueStore,
) -> None:
    store.put_many([(b"a", b"1"), ("b", b"x"), (b"a", b"2"), ("a", b"3")])
    assert store.get_many([b"a", b"b", b"c"]) == [b"3", b"x", None]


def test_a_closed_store_refuses_calls(store: RedisKeyValueStore) -> None:
    store.put(b"k", b"v")
    other = RedisKeyValueStore(store._client, namespace="unused:")
    other.close()
    other.close()  # idempotent
    with pytest.raises(FailedPrecondition):
        other.get(b"k")
    with pytest.raises(FailedPrecondition):
        other.put_many([(b"k", b"v")])


def test_a_foreign_key_in_the_namespace_is_the_servers_fault(
    store: RedisKeyValueStore,
) -> None:
    store._client.set(store._prefix + b"plain", b"not a hash")  # written behind the adapter
    with pytest.raises(PeerError):
        store.get(b"plain")


def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        kv = RedisKeyValueStore.open(server.url, namespace="down:", timeout_s=30.0)
        kv.put(b"k", b"v")
        server.stop()
        with pytest.raises(Unavailable):
            kv.get(b"k")
        with pytest.raises(Unavailable):
            kv.put(b"k", b"w")
        server.start()
        assert kv.get(b"k") == b"v"  # acknowledged before the stop, fsynced
        kv.close()
