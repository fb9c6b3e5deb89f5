"""``RedisCounters`` beyond the counters contract, on a real redis-server: the sketches
(Redis HyperLogLog; Count-Min and top-k in a hash and a sorted set), the bounds, and errors."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.core.errors import BlocksError, InvalidArgument, Overloaded, Unavailable
from blocks.counters.api import Counters
from blocks.counters.countmin import CountMinSketch
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.counters.adapters.redis", reason="redis not installed")
RedisCounters = redis_adapter.RedisCounters


@pytest.fixture
def counters(redis_server: RedisServer) -> Iterator[Any]:
    adapter = RedisCounters.open(redis_server.url, namespace=f"t{uuid.uuid4().hex[:10]}:")
    yield adapter
    adapter.close()


def _open(server: RedisServer, **options: Any) -> Any:
    return RedisCounters.open(server.url, namespace=f"t{uuid.uuid4().hex[:10]}:", **options)


def test_concurrent_increments_from_two_clients_are_exact(redis_server: RedisServer) -> None:
    first = _open(redis_server)
    second = RedisCounters.open(redis_server.url, namespace=first._namespace)
    per_thread = 150

    def work(adapter: Any, amount: int) -> None:
        for _ in range(per_thread):
            adapter.increment("hits", amount)

    threads = [threading.Thread(target=work, args=(a, n)) for a, n in ((first, 1), (second, 2))]
    threads += [threading.Thread(target=work, args=(a, -1)) for a in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert first.value("hits") == second.value("hits") == per_thread * (1 + 2 - 1 - 1)
    first.close()
    second.close()


def test_a_sum_past_64_bits_is_refused_and_changes_nothing(counters: Any) -> None:
    big = (1 << 62) - 1
    assert counters.increment("n", big) == big
    assert counters.increment("n", big) == 2 * big
    with pytest.raises(InvalidArgument):
        counters.increment("n", big)
    assert counters.value("n") == 2 * big


def test_names_past_the_bound_are_overloaded(
    counters: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_adapter, "COUNTERS_MAX", 3)
    monkeypatch.setattr(redis_adapter, "SKETCHES_MAX", 1)
    for name in "abc":
        counters.increment(name)
    with pytest.raises(Overloaded):
        counters.increment("d", 5)
    assert counters.value("d") == 0
    assert counters.increment("a", 2) == 3  # a known name is always admitted
    counters.add_distinct("x", [b"1"])
    with pytest.raises(Overloaded):
        counters.add_distinct("y", [b"1"])
    counters.add_frequent("x", [b"1"])
    with pytest.raises(Overloaded):
        counters.add_frequent("y", [b"1"])
    assert counters.count_distinct("y") == 0 and counters.top_k("y") == []


def test_distinct_counts_are_within_the_hyperloglog_error(counters: Any) -> None:
    items = [f"user-{i}".encode() for i in range(20_000)]
    for start in range(0, len(items), 5_000):
        counters.add_distinct("visitors", items[start : start + 5_000])
    counters.add_distinct("visitors", items[:5_000])  # repeats count once
    count = counters.count_distinct("visitors")
    assert abs(count - 20_000) <= 20_000 * 0.03, count  # 0.81 % standard error
    assert counters.count_distinct("nobody") == 0


def test_count_min_cells_are_the_local_sketchs(counters: Any) -> None:
    rng = random.Random(7)
    stream = [f"k{min(int(rng.paretovariate(1.2)), 500)}".encode() for _ in range(3_000)]
    local = CountMinSketch(64, 4, seed=9)
    adapter = RedisCounters(
        counters._client, namespace=counters._namespace, cms_width=64, cms_depth=4, top_k=5, seed=9
    )
    for start in range(0, len(stream), 1_000):
        total = adapter.add_frequent("words", stream[start : start + 1_000])
    for item in stream:
        local.add(item)
    assert total == local.total == len(stream)
    for item in set(stream):
        assert adapter.estimate("words", item) == local.estimate(item)
    exact = {item: stream.count(item) for item in set(stream)}
    heavy = {item for item, count in exact.items() if count > len(stream) / 5}
    top = adapter.top_k("words", 5)
    assert heavy and heavy <= {item for item, _ in top}
    assert [count for _, count in top] == sorted((c for _, c in top), reverse=True)
    assert all(count == local.estimate(item) for item, count in top)


def test_a_tracker_keeps_its_shape(counters: Any) -> None:
    counters.add_frequent("t", [b"a"])
    other = RedisCounters(counters._client, namespace=counters._namespace, cms_width=16)
    with pytest.raises(InvalidArgument):
        other.add_frequent("t", [b"a"])
    assert counters.add_frequent("t", [b"b"]) == 2


def test_bad_input_is_refused(counters: Any) -> None:
    with pytest.raises(InvalidArgument):
        counters.add_distinct("x", [1])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument):
        counters.add_frequent("", [b"a"])
    with pytest.raises(InvalidArgument):
        counters.add_frequent("x", [b"a"] * (redis_adapter.ITEMS_PER_CALL_MAX + 1))
    with pytest.raises(InvalidArgument):
        counters.top_k("x", -1)
    with pytest.raises(InvalidArgument):
        RedisCounters(counters._client, top_k=0)
    assert isinstance(counters, Counters)


def test_a_stopped_server_is_unavailable(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        counters = RedisCounters.open(server.url, timeout_s=5.0)
        assert counters.increment("n", 2) == 2
        server.stop()
        with pytest.raises(Unavailable):
            counters.increment("n")
        with pytest.raises(Unavailable):
            counters.value("n")
        server.start()
        assert counters.value("n") == 2  # fsynced before it was acknowledged
        counters.close()


def test_acknowledged_increments_survive_a_kill(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:  # append-only file fsynced per write
        counters = RedisCounters.open(server.url, timeout_s=5.0)
        for _ in range(100):
            counters.increment("n", 3)
        counters.add_frequent("f", [b"a", b"b", b"a"])
        server.kill()  # SIGKILL: nothing is flushed at exit
        server.start()
        assert counters.value("n") == 300
        assert counters.estimate("f", b"a") == 2 and counters.add_frequent("f", []) == 3
        counters.close()


def test_a_refused_new_name_takes_no_place_in_the_bound(
    counters: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # increment admits a name by adding it first (SADD) and takes it out again when refused
    monkeypatch.setattr(redis_adapter, "COUNTERS_MAX", 2)
    counters.increment("a")
    counters._client.set(counters._key("counter", "b"), b"not a number")
    with pytest.raises(BlocksError):
        counters.increment("b")  # INCRBY fails on the server: the name is not kept
    counters.increment("c")
    with pytest.raises(Overloaded):
        counters.increment("d")
    monkeypatch.setattr(redis_adapter, "COUNTERS_MAX", 3)
    assert counters.increment("e", 4) == 4  # "d" was not kept either
    names = counters._client.smembers(counters._key("names", "counter"))
    assert names == {b"a", b"c", b"e"}
