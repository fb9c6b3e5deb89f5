"""``RedisCache`` beyond the cache contract, on a real redis-server: overwrite and TTL on the
server's clock, the default codec, statistics, single-flight loading, the maxmemory bound
under two policies, bad input and a stopped server."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.cache.api import Cache
from blocks.cache.loading import ReadThrough
from blocks.core.errors import InvalidArgument, Overloaded, PeerError, Unavailable
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.cache.adapters.redis", reason="redis not installed")
RedisCache = redis_adapter.RedisCache
DEADLINE_S = 30.0
"""Generous bound on any wait in these tests (a loaded machine is slow, never this slow)."""
THREADS = 8


@pytest.fixture
def cache(redis_server: RedisServer) -> Iterator[Any]:
    adapter = RedisCache.open(redis_server.url, 100, namespace=f"t{uuid.uuid4().hex[:10]}:")
    yield adapter
    adapter.close()


def _wait_until(condition: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_put_replaces_the_value_and_its_ttl(cache: Any) -> None:
    cache.put("k", [1, 2], ttl=30.0)
    ttl_ms = cache._client.pttl(cache._key("k"))
    assert 0 < ttl_ms <= 30_000
    cache.put("k", {"v": 3})
    assert cache.get("k") == {"v": 3}
    assert cache._client.pttl(cache._key("k")) == -1  # no TTL any more
    assert cache.delete("k") and not cache.delete("k")
    assert "k" not in cache and cache.get("k") is None and cache.get("k", 7) == 7


def test_ttl_runs_on_the_servers_clock(cache: Any) -> None:
    cache.put(1, "short", ttl=0.05)
    cache.put(2, "long", ttl=60.0)
    _wait_until(lambda: 1 not in cache)  # however long the machine takes, it goes
    assert cache.get(1) is None and cache.get(2) == "long"
    assert cache.sweep() == 0  # Redis expires keys itself: nothing left to sweep


def test_keys_are_their_msgpack_encoding_and_values_msgpack_by_default(cache: Any) -> None:
    cache.put(1, "int")
    cache.put("1", "str")
    cache.put(b"1", "bytes")
    assert [cache.get(k) for k in (1, "1", b"1")] == ["int", "str", "bytes"]
    cache.put("t", ("a", 1))
    assert cache.get("t") == ["a", 1]  # msgpack: a tuple comes back as a list
    with pytest.raises(InvalidArgument):
        cache.put("s", {1, 2})  # a set is not msgpack
    cache._client.set(cache._key("x"), b"\xc1")  # written by someone else: not msgpack
    with pytest.raises(PeerError):
        cache.get("x")
    pickled = RedisCache(
        cache._client, 10, namespace=cache._namespace, encode=pickle.dumps, decode=pickle.loads
    )
    with pytest.raises(InvalidArgument):
        pickled.put("f", lambda: None)  # a codec's own error is the block's
    with pytest.raises(PeerError):
        pickled.get("x")


def test_hits_misses_and_size_are_exact(cache: Any) -> None:
    for key in range(5):
        cache.put(key, key)
    for key in range(8):
        cache.get(key)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.weight) == (5, 3, 5, 5)
    assert len(cache) == 5
    cache.clear()
    assert len(cache) == 0 and cache.stats().hits == 5


def test_single_flight_runs_one_loader_per_key(cache: Any) -> None:
    release = threading.Event()
    loads: list[str] = []

    def loader() -> str:
        loads.append("k")
        assert release.wait(DEADLINE_S)
        return "loaded"

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_load("k", loader)))
        for _ in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    _wait_until(lambda: loads)
    release.set()
    for thread in threads:
        thread.join()
    assert results == ["loaded"] * THREADS
    assert loads == ["k"] and cache.loads == 1
    assert cache.get("k") == "loaded"


def test_a_failed_load_is_not_cached_and_loads_are_bounded(redis_server: RedisServer) -> None:
    cache = RedisCache.open(
        redis_server.url, 10, namespace=f"t{uuid.uuid4().hex[:10]}:", inflight_max=1
    )

    def fail() -> str:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError):
        cache.get_or_load("k", fail)
    assert "k" not in cache
    release = threading.Event()
    slow = threading.Thread(target=cache.get_or_load, args=("a", lambda: release.wait(30)))
    slow.start()
    _wait_until(lambda: cache._inflight)
    with pytest.raises(Overloaded):
        cache.get_or_load("b", lambda: "b")
    release.set()
    slow.join()
    assert cache.get_or_load("b", lambda: "b") == "b"
    cache.close()


def _fill(cache: Any, count: int, size: int) -> None:
    for index in range(count):
        cache.put(index, b"x" * size)


def test_allkeys_lru_evicts_so_every_put_lands(tmp_path: Path) -> None:
    args = ("--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru")
    with RedisServer(tmp_path, appendfsync="no", extra_args=args) as server:
        cache = RedisCache.open(server.url, 10)
        _fill(cache, 2_000, 4_096)  # about 8 MiB of values into 3 MiB
        assert 1_999 in cache  # the last put is resident
        stats = cache.stats()
        assert stats.evictions > 0 and stats.size < 2_000
        info = cache._client.info("memory")
        assert info["used_memory"] <= info["maxmemory"] * 1.1
        cache.close()


def test_noeviction_refuses_puts_past_maxmemory(tmp_path: Path) -> None:
    args = ("--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    with RedisServer(tmp_path, appendfsync="no", extra_args=args) as server:
        cache = RedisCache.open(server.url, 10)
        with pytest.raises(Overloaded):
            _fill(cache, 2_000, 4_096)
        size = len(cache)
        assert 0 < size < 2_000 and cache.get(0) == b"x" * 4_096
        with pytest.raises(Overloaded):
            cache.put("more", b"y" * 4_096)
        assert "more" not in cache and len(cache) == size
        assert cache.delete(0)  # deletes still work, and free room
        cache.close()


def test_bad_input_is_refused(cache: Any) -> None:
    for call in (
        lambda: cache.put(["unhashable"], 1),
        lambda: cache.put("k", 1, weight=0),
        lambda: cache.put("k", 1, weight=101),
        lambda: cache.put("k", 1, ttl=0),
        lambda: cache.put("k", 1, ttl=float("inf")),
        lambda: cache.put("k", 1, ttl="1"),
        lambda: cache.get({}),
        lambda: cache.sweep(-1),
        lambda: RedisCache(cache._client, 0),
    ):
        with pytest.raises(InvalidArgument):
            call()
    assert len(cache) == 0
    assert isinstance(cache, Cache)


def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        cache = RedisCache.open(server.url, 10, timeout_s=5.0)
        cache.put("k", "v")
        server.stop()
        with pytest.raises(Unavailable):
            cache.get("k")
        with pytest.raises(Unavailable):
            cache.put("k", "w")
        server.start()
        assert cache.get("k") == "v"
        cache.close()


def test_a_loaded_none_is_cached(cache: Any) -> None:
    assert cache.get_or_load("n", lambda: None) is None
    assert cache.get_or_load("n", lambda: "again") is None
    assert cache.loads == 1


def test_a_miss_that_races_a_finished_load_does_not_load_again(
    redis_server: RedisServer,
) -> None:
    missed, finished = threading.Event(), threading.Event()

    class PausingCache(RedisCache):  # type: ignore[misc, valid-type]
        def get(self, key: Any, default: Any = None) -> Any:
            found = super().get(key, default)
            if threading.current_thread().name == "late":
                missed.set()
                assert finished.wait(DEADLINE_S)  # the other load ends after our miss
            return found

    cache = PausingCache.open(redis_server.url, 10, namespace=f"t{uuid.uuid4().hex[:10]}:")
    results: list[str] = []
    late = threading.Thread(
        target=lambda: results.append(cache.get_or_load("k", lambda: "late")), name="late"
    )
    late.start()
    assert missed.wait(DEADLINE_S)
    assert cache.get_or_load("k", lambda: "first") == "first"
    finished.set()
    late.join()
    assert results == ["first"] and cache.loads == 1
    cache.close()


def test_read_through_over_redis_coalesces_and_surfaces_a_failed_put(cache: Any) -> None:
    pickled = RedisCache(
        cache._client, 10, namespace=cache._namespace, encode=pickle.dumps, decode=pickle.loads
    )
    loads: list[str] = []

    async def load(key: str) -> str:
        loads.append(key)
        await asyncio.sleep(0)
        return f"loaded {key}"

    async def two_readers(reader: ReadThrough[str, str], key: str) -> list[str]:
        gets = asyncio.gather(reader.get(key), reader.get(key))
        return await asyncio.wait_for(gets, DEADLINE_S)

    assert asyncio.run(two_readers(ReadThrough(pickled, load), "k")) == ["loaded k"] * 2
    assert loads == ["k"]
    # ReadThrough stores its own records, which msgpack cannot carry: every reader gets the
    # put's error (it used to leave them waiting forever).
    with pytest.raises(InvalidArgument):
        asyncio.run(two_readers(ReadThrough(cache, load), "m"))
