"""Runs the public rate-limiter contract against every algorithm."""

from __future__ import annotations

from blocks.ratelimit.api import RateLimiter
from blocks.ratelimit.bucket import GCRA, TokenBucket
from blocks.ratelimit.contract import (
    Admissions,
    RateLimiterContract,
    aligned_window_promise,
    rate_promise,
    sliding_promise,
)
from blocks.ratelimit.distributed import DistributedLimiter, MemoryWindowStore
from blocks.ratelimit.windows import FixedWindow, SlidingWindowCounter, SlidingWindowLog


class Bucket(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return TokenBucket(rate_per_s=7.5, burst=10, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        rate_promise(admissions, 7.5, 10)


class Gcra(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return GCRA(rate_per_s=3, burst=6, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        rate_promise(admissions, 3, 6)


class Fixed(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return FixedWindow(limit=9, window_ms=1000, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        aligned_window_promise(admissions, 9, 1000)


class Log(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return SlidingWindowLog(limit=8, window_ms=700, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        sliding_promise(admissions, 8, 700)


class Counter(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return SlidingWindowCounter(limit=12, window_ms=500, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        aligned_window_promise(admissions, 12, 500)
        # The weighted estimate also keeps any sliding window under twice the limit.
        sliding_promise(admissions, 24, 500)


TestTokenBucket = Bucket.TestCase
TestGcra = Gcra.TestCase
TestFixedWindow = Fixed.TestCase
TestSlidingWindowLog = Log.TestCase
TestSlidingWindowCounter = Counter.TestCase


class DistributedExact(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        return DistributedLimiter(MemoryWindowStore(), limit=10, window_ms=500, clock=self.clock)

    def check_promise(self, admissions: Admissions) -> None:
        aligned_window_promise(admissions, 10, 500)


class DistributedBatched(RateLimiterContract):
    def make_subject(self) -> RateLimiter:
        store = MemoryWindowStore()
        return DistributedLimiter(
            store, limit=10, window_ms=500, sync_interval_ms=40, clock=self.clock
        )

    def check_promise(self, admissions: Admissions) -> None:
        aligned_window_promise(admissions, 10, 500)


TestDistributedExact = DistributedExact.TestCase
TestDistributedBatched = DistributedBatched.TestCase
