"""The counters contract against ``RedisCounters`` on a real redis-server: every property
the adapter claims (all of them). Each example gets its own key namespace."""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest
from hypothesis import settings

from blocks.counters.api import Counters
from blocks.counters.contract import CountersContract
from blocks.testing.engines import RedisServer

redis_adapter = pytest.importorskip("blocks.counters.adapters.redis", reason="redis not installed")


class RedisCountersContract(CountersContract):
    declared_properties = redis_adapter.PROPERTIES
    server: ClassVar[RedisServer | None] = None

    def make_subject(self) -> Counters:
        assert self.server is not None
        namespace = f"c{uuid.uuid4().hex[:10]}:"
        return redis_adapter.RedisCounters.open(self.server.url, namespace=namespace)


@pytest.fixture(autouse=True)
def _redis_server(redis_server: RedisServer) -> None:
    RedisCountersContract.server = redis_server


def test_redis_claims_every_counters_property() -> None:
    assert RedisCountersContract.skipped_properties() == ()


TestRedisCountersContract = RedisCountersContract.TestCase
TestRedisCountersContract.settings = settings(
    settings.default, max_examples=15, stateful_step_count=25, deadline=None
)
