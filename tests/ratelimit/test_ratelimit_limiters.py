from __future__ import annotations

import asyncio

import pytest

from blocks.core.clock import ManualClock
from blocks.core.errors import InvalidArgument, Overloaded
from blocks.ratelimit.api import Decision
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.guard import acquire_or_wait, limit, rate_limited
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog

ALL = [
    lambda clock, keys_max=1000: TokenBucket(10, 5, clock=clock, keys_max=keys_max),
    lambda clock, keys_max=1000: GCRA(10, 5, clock=clock, keys_max=keys_max),
    lambda clock, keys_max=1000: FixedWindow(5, 1000, clock=clock, keys_max=keys_max),
    lambda clock, keys_max=1000: SlidingWindowLog(5, 1000, clock=clock, keys_max=keys_max),
    lambda clock, keys_max=1000: SlidingWindowCounter(5, 1000, clock=clock, keys_max=keys_max),
]


def test_token_bucket_numbers() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=2, burst=3, clock=clock)
    assert bucket.acquire("k", 3) == Decision(True, 0, 0, 1500)
    assert bucket.acquire("k") == Decision(False, 0, 500, 1500)
    clock.advance(ms=500)
    assert bucket.acquire("k") == Decision(True, 0, 0, 1500)


def test_gcra_matches_token_bucket_decisions() -> None:
    clock = ManualClock()
    bucket, gcra = TokenBucket(4, 6, clock=clock), GCRA(4, 6, clock=clock)
    for step in range(300):
        cost = 1 + step * 7 % 3
        first, second = bucket.acquire("k", cost), gcra.acquire("k", cost)
        assert first.allowed == second.allowed, step
        assert first.retry_after_ms == second.retry_after_ms, step
        clock.advance(ms=step * 37 % 190)


def test_fixed_window_resets_on_boundary() -> None:
    clock = ManualClock(monotonic_s=10.0)
    window = FixedWindow(2, 1000, clock=clock)
    assert window.acquire("k").allowed and window.acquire("k").allowed
    clock.advance(ms=999)
    refused = window.acquire("k")
    assert not refused.allowed and refused.retry_after_ms == 1
    clock.advance(ms=1)
    assert window.acquire("k", 2).allowed


def test_sliding_log_retry_points_at_oldest_entry() -> None:
    clock = ManualClock()
    log = SlidingWindowLog(3, 1000, clock=clock)
    log.acquire("k", 2)
    clock.advance(ms=300)
    log.acquire("k", 1)
    refused = log.acquire("k", 2)
    assert refused.retry_after_ms == 700
    clock.advance(ms=699)
    assert not log.acquire("k", 2).allowed
    clock.advance(ms=1)
    assert log.acquire("k", 2).allowed


def test_sliding_counter_weights_previous_window() -> None:
    clock = ManualClock(monotonic_s=0.0)
    counter = SlidingWindowCounter(10, 1000, clock=clock)
    assert counter.acquire("k", 10).allowed
    clock.advance(ms=1250)  # 75% of the previous window still overlaps: estimate 7.5
    assert counter.acquire("k", 2).allowed
    refused = counter.acquire("k", 1)
    assert not refused.allowed
    clock.advance(ms=refused.retry_after_ms)
    assert counter.acquire("k", 1).allowed


@pytest.mark.parametrize("make", ALL)
@pytest.mark.parametrize(
    "key,cost", [("", 1), ("x" * 257, 1), (3, 1), ("k", 0), ("k", 6), ("k", 1.0), ("k", True)]
)
def test_bad_requests_are_refused_and_change_nothing(make, key: object, cost: object) -> None:  # type: ignore[no-untyped-def]
    limiter = make(ManualClock())
    with pytest.raises(InvalidArgument):
        limiter.acquire(key, cost)
    assert limiter.tracked_keys() == 0
    assert limiter.acquire("k", 5).allowed


@pytest.mark.parametrize(
    "build",
    [
        lambda: TokenBucket(0, 5),
        lambda: TokenBucket(1, 0),
        lambda: GCRA(-1, 5),
        lambda: FixedWindow(5, 0),
        lambda: SlidingWindowLog(10**6, 1000),
        lambda: SlidingWindowCounter(5, 1000, keys_max=0),
        lambda: TokenBucket(float("nan"), 5),
    ],
)
def test_bad_configuration_is_refused(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument):
        build()


@pytest.mark.parametrize("make", ALL)
def test_key_table_is_bounded_and_forgets_only_idle_keys(make) -> None:  # type: ignore[no-untyped-def]
    clock = ManualClock()
    limiter = make(clock, keys_max=3)
    for key in "abc":
        limiter.acquire(key, 5)
    with pytest.raises(Overloaded):
        limiter.acquire("d")
    clock.advance(5.0)
    assert limiter.acquire("d").allowed
    assert limiter.tracked_keys() == 1


def test_context_manager_and_decorator_wait_then_give_up() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate_per_s=10, burst=1, clock=clock)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    calls: list[str] = []

    @rate_limited(bucket, key=lambda user: f"user:{user}", wait_ms_max=100, sleep=sleep)
    async def handle(user: str) -> str:
        calls.append(user)
        return user.upper()

    async def main() -> None:
        async with limit(bucket, "plain", sleep=sleep) as decision:
            assert decision.allowed
        assert await handle("ann") == "ANN"
        assert await handle("ann") == "ANN"  # waited 100 ms for a token
        assert slept == [0.1]
        with pytest.raises(Overloaded) as refused:
            async with limit(bucket, "user:ann", cost=1, sleep=sleep):
                raise AssertionError("entered without admission")
        assert refused.value.retry_after_ms == 100
        with pytest.raises(InvalidArgument):
            await acquire_or_wait(bucket, "x", wait_ms_max=-1)

    asyncio.run(main())
    assert calls == ["ann", "ann"]
