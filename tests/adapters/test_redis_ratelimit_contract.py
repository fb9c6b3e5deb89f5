"""The rate-limit contract against ``RedisTokenBucket``, ``RedisGCRA`` and
``DistributedLimiter`` over ``RedisWindowStore`` on a real redis-server: every property they
claim (all of them). Time comes from the contract's ``ManualClock`` (the adapters'
injected-clock mode); each example gets its own namespace."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.ratelimit.api import RateLimiter
from blocks.ratelimit.contract import (
    Admissions,
    RateLimiterContract,
    aligned_window_promise,
    rate_promise,
)
from blocks.ratelimit.distributed import DistributedLimiter
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.ratelimit.adapters.redis", reason="redis not installed")


class _OnRedis(RateLimiterContract):
    declared_properties = redis_adapter.PROPERTIES
    server: ClassVar[RedisServer | None] = None

    def _url_and_namespace(self) -> tuple[str, str]:
        assert self.server is not None
        return self.server.url, f"r{uuid.uuid4().hex[:10]}:"


class RedisBucketContract(_OnRedis):
    def make_subject(self) -> RateLimiter:
        url, namespace = self._url_and_namespace()
        limiter: RateLimiter = redis_adapter.RedisTokenBucket.open(
            url, 7.5, 10, namespace=namespace, clock=self.clock
        )
        return limiter

    def check_promise(self, admissions: Admissions) -> None:
        rate_promise(admissions, 7.5, 10)


class RedisGcraContract(_OnRedis):
    def make_subject(self) -> RateLimiter:
        url, namespace = self._url_and_namespace()
        limiter: RateLimiter = redis_adapter.RedisGCRA.open(
            url, 3, 6, namespace=namespace, clock=self.clock
        )
        return limiter

    def check_promise(self, admissions: Admissions) -> None:
        rate_promise(admissions, 3, 6)


class RedisWindowsContract(_OnRedis):
    """``DistributedLimiter`` (exact mode) over ``RedisWindowStore``."""

    sync_interval_ms = 0

    def make_subject(self) -> RateLimiter:
        url, namespace = self._url_and_namespace()
        store = redis_adapter.RedisWindowStore.open(url, namespace=namespace)
        self.stores.append(store)
        return DistributedLimiter(
            store,
            limit=10,
            window_ms=500,
            sync_interval_ms=self.sync_interval_ms,
            clock=self.clock,
        )

    def __init__(self) -> None:
        self.stores: list[Any] = []
        super().__init__()

    def close_subject(self, subject: RateLimiter) -> None:
        for store in self.stores:
            store.close()

    def check_promise(self, admissions: Admissions) -> None:
        aligned_window_promise(admissions, 10, 500)


class RedisWindowsBatchedContract(RedisWindowsContract):
    sync_interval_ms = 40


@pytest.fixture(autouse=True)
def _redis_server(redis_server: RedisServer) -> None:
    _OnRedis.server = redis_server


def test_redis_limiters_claim_every_property() -> None:
    assert RedisBucketContract.skipped_properties() == RedisGcraContract.skipped_properties() == ()


_SETTINGS = settings(settings.default, max_examples=15, stateful_step_count=25, deadline=None)
TestRedisBucketContract = RedisBucketContract.TestCase
TestRedisBucketContract.settings = _SETTINGS
TestRedisGcraContract = RedisGcraContract.TestCase
TestRedisGcraContract.settings = _SETTINGS
TestRedisWindowsContract = RedisWindowsContract.TestCase
_WINDOW_SETTINGS = settings(_SETTINGS, max_examples=8)
TestRedisWindowsContract.settings = _WINDOW_SETTINGS
TestRedisWindowsBatchedContract = RedisWindowsBatchedContract.TestCase
TestRedisWindowsBatchedContract.settings = _WINDOW_SETTINGS
