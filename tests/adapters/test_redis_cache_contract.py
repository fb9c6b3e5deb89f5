"""The cache contract against ``RedisCache`` on a real redis-server: the properties the
adapter claims ("exact values", "bad input"); the others are skipped by name. Each example
gets its own namespace. The contract's values are tuples, so the adapter stores them with
pickle (msgpack would give them back as lists), on the test's own server."""

from __future__ import annotations

import pickle
import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.cache.api import Cache
from blocks.cache.contract import CacheContract
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.cache.adapters.redis", reason="redis not installed")


class RedisCacheContract(CacheContract):
    declared_properties = redis_adapter.PROPERTIES
    server: ClassVar[RedisServer | None] = None

    def make_subject(self) -> Cache[Any, Any]:
        assert self.server is not None
        cache: Cache[Any, Any] = redis_adapter.RedisCache.open(
            self.server.url,
            self.capacity,
            namespace=f"c{uuid.uuid4().hex[:10]}:",
            encode=pickle.dumps,
            decode=pickle.loads,
        )
        return cache


@pytest.fixture(autouse=True)
def _redis_server(redis_server: RedisServer) -> None:
    RedisCacheContract.server = redis_server


def test_redis_skips_expiry_capacity_and_statistics_by_name() -> None:
    assert RedisCacheContract.skipped_properties() == ("exact expiry", "capacity", "statistics")


TestRedisCacheContract = RedisCacheContract.TestCase
TestRedisCacheContract.settings = settings(
    settings.default, max_examples=15, stateful_step_count=25, deadline=None
)
