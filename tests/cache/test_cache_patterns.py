"""Patterns: coalescing, XFetch, negative caching, the decorator, write-through/behind."""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from blocks.cache import LRUCache
from blocks.cache.loading import ReadThrough, cached
from blocks.cache.writing import WriteBehind, WriteThrough
from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, NotFound, Overloaded


def run_async(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop with a deadline (no pytest plugin needed)."""

    @functools.wraps(test)
    def wrapper() -> None:
        asyncio.run(asyncio.wait_for(test(), timeout=10))

    return wrapper


class SlowLoader:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[Any] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, key: Any) -> Any:
        self.calls.append(key)
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return f"value-{key}"


@run_async
async def test_concurrent_misses_call_the_loader_once() -> None:
    loader = SlowLoader()
    reader: ReadThrough[str, str] = ReadThrough(LRUCache(10), loader)
    waiters = [asyncio.create_task(reader.get("k")) for _ in range(50)]
    other = asyncio.create_task(reader.get("other"))
    await asyncio.sleep(0)
    loader.release.set()
    assert await asyncio.gather(*waiters) == ["value-k"] * 50
    assert await other == "value-other"
    assert sorted(loader.calls) == ["k", "other"] and reader.loads == 2
    assert await reader.get("k") == "value-k" and reader.loads == 2


@run_async
async def test_a_failing_loader_reaches_every_waiter_as_the_same_error() -> None:
    error = RuntimeError("store down")
    loader = SlowLoader(fail=error)
    reader: ReadThrough[str, str] = ReadThrough(LRUCache(10), loader)
    waiters = [asyncio.create_task(reader.get("k")) for _ in range(20)]
    await asyncio.sleep(0)
    loader.release.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(outcome is error for outcome in outcomes)
    assert len(loader.calls) == 1
    loader.fail = None  # errors are not cached: the next call loads again
    assert await reader.get("k") == "value-k" and len(loader.calls) == 2


@run_async
async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    loader = SlowLoader()
    reader: ReadThrough[str, str] = ReadThrough(LRUCache(10), loader)
    first = asyncio.create_task(reader.get("k"))
    second = asyncio.create_task(reader.get("k"))
    await asyncio.sleep(0)
    first.cancel()
    loader.release.set()
    assert await second == "value-k"
    with pytest.raises(asyncio.CancelledError):
        await first


@run_async
async def test_negative_caching() -> None:
    clock = ManualClock(monotonic_s=0.0)
    calls = 0

    async def loader(key: str) -> str:
        nonlocal calls
        calls += 1
        raise NotFound(f"no {key}")

    reader: ReadThrough[str, str] = ReadThrough(
        LRUCache(10, clock=clock), loader, negative_ttl=5, clock=clock
    )
    for _ in range(3):
        with pytest.raises(NotFound, match="no k"):
            await reader.get("k")
    assert calls == 1
    clock.advance(5)
    with pytest.raises(NotFound):
        await reader.get("k")
    assert calls == 2


@run_async
async def test_xfetch_refreshes_early_with_growing_probability() -> None:
    clock = ManualClock(monotonic_s=0.0)
    version = 0

    async def loader(key: str) -> int:
        nonlocal version
        clock.advance(1.0)  # every load takes one second
        version += 1
        return version

    reader: ReadThrough[str, int] = ReadThrough(
        LRUCache(10, clock=clock), loader, ttl=60, clock=clock, rng=random.Random(7)
    )
    assert await reader.get("k") == 1  # expires at 61
    clock.advance(10)  # far from expiry: exp(-50) chance per read
    assert [await reader.get("k") for _ in range(200)] == [1] * 200
    clock.advance(49.5)  # 0.5 s before expiry: chance exp(-0.5) ~ 61% per read
    refreshed = [await reader.get("k") for _ in range(5)]
    assert 2 in refreshed and reader.early_refreshes >= 1
    assert reader.loads == 1 + reader.early_refreshes


@run_async
async def test_xfetch_can_be_disabled_and_validates() -> None:
    clock = ManualClock(monotonic_s=0.0)

    async def loader(key: str) -> str:
        clock.advance(1.0)
        return key

    reader: ReadThrough[str, str] = ReadThrough(
        LRUCache(10, clock=clock), loader, ttl=10, beta=0, clock=clock
    )
    await reader.get("k")
    clock.advance(8.99)
    for _ in range(100):
        await reader.get("k")
    assert reader.loads == 1
    for bad in ({"beta": -1.0}, {"ttl": 0.0}, {"negative_ttl": float("inf")}, {"inflight_max": 0}):
        with pytest.raises(InvalidArgument):
            ReadThrough(LRUCache(2), loader, **bad)  # type: ignore[arg-type]


@run_async
async def test_inflight_is_bounded() -> None:
    loader = SlowLoader()
    reader: ReadThrough[int, str] = ReadThrough(LRUCache(10), loader, inflight_max=2)
    tasks = [asyncio.create_task(reader.get(k)) for k in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await reader.get(3)
    loader.release.set()
    await asyncio.gather(*tasks)


def test_decorator_on_sync_functions() -> None:
    calls: list[tuple[int, int]] = []

    @cached(LRUCache(10))
    def add(a: int, b: int = 0) -> int:
        calls.append((a, b))
        return a + b

    assert add(1, 2) == add(1, 2) == 3
    assert add(5) == 5 and add(5) == 5 and add(5, b=1) == 6
    assert calls == [(1, 2), (5, 0), (5, 1)]


@run_async
async def test_decorator_on_async_functions_coalesces() -> None:
    calls = 0
    gate = asyncio.Event()

    @cached(LRUCache(10), key=lambda user_id: f"user:{user_id}")
    async def profile(user_id: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return {"id": user_id}

    tasks = [asyncio.create_task(profile(7)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [{"id": 7}] * 10
    assert await profile(7) == {"id": 7} and calls == 1


class DictStore:
    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.fail = False
        self.writes = 0

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def put(self, key: Any, value: Any) -> None:
        if self.fail:
            raise ConnectionError("store down")
        self.writes += 1
        self.data[key] = value

    async def delete(self, key: Any) -> bool:  # async on purpose: both kinds work
        if self.fail:
            raise ConnectionError("store down")
        return self.data.pop(key, None) is not None


@run_async
async def test_write_through() -> None:
    store, cache = DictStore(), LRUCache[Any, Any](10)
    through = WriteThrough(cache, store)
    await through.put("a", 1)
    assert store.data == {"a": 1} and cache.get("a") == 1
    store.fail = True
    with pytest.raises(ConnectionError):
        await through.put("a", 2)
    assert "a" not in cache and store.data["a"] == 1  # never stale, never ahead of the store
    store.fail = False
    assert await through.get("a") == 1 and cache.get("a") == 1
    await through.delete("a")
    assert await through.get("a") is None


@run_async
async def test_write_behind_coalesces_and_survives_store_failure() -> None:
    store, cache = DictStore(), LRUCache[Any, Any](2)
    behind = WriteBehind(cache, store, pending_max=3, batch_max=2)
    for value in range(10):
        behind.put("hot", value)
    behind.put("x", "x")
    behind.put("y", "y")  # capacity 2: "hot" is evicted from the cache but still pending
    assert await behind.get("hot") == 9 and store.writes == 0
    with pytest.raises(Overloaded):
        behind.put("z", "z")
    store.fail = True
    with pytest.raises(ConnectionError):
        await behind.flush()
    assert behind.pending == 3
    behind.put("hot", 10)  # newer than the failed write
    store.fail = False
    await behind.close()
    assert store.data == {"hot": 10, "x": "x", "y": "y"} and store.writes == 3
    behind.delete("x")
    assert await behind.get("x") is None
    stop = asyncio.Event()
    runner = asyncio.create_task(behind.run(0.01, stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(runner, timeout=5)
    assert "x" not in store.data and behind.pending == 0
    with pytest.raises(InvalidArgument):
        WriteBehind(cache, store, pending_max=0)
