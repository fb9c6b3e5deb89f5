"""The sequencer contract against ``RedisSnowflake`` on a real ``redis-server``: every
property it claims (all of them). Each example leases its worker id in its own namespace,
on the contract's manual clock (wall jumps both ways renew the lease's published bound in
line), and releases it at the end; its keys are removed then."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from hypothesis import settings

from blocks.sequencer.api import IdGenerator
from blocks.sequencer.contract import SequencerContract
from blocks.testing.engines import RedisServer

redis_sequencer = pytest.importorskip("blocks.sequencer.adapters.redis", reason="no redis")


def delete_namespace(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in list(client.scan_iter(match=f"{namespace}*")):
            client.delete(name)
    finally:
        client.close()


class RedisSnowflakeContract(SequencerContract):
    declared_properties = redis_sequencer.PROPERTIES
    server: ClassVar[RedisServer | None] = None

    def make_subject(self) -> IdGenerator[Any]:
        assert self.server is not None
        self.namespace = f"s{uuid.uuid4().hex[:10]}:"
        # A long TTL: Redis expires keys on the real clock, the holder counts the manual one.
        config = redis_sequencer.RedisLeaseConfig(
            workers=4, ttl_ms=120_000, safety_margin_ms=5_000, namespace=self.namespace
        )
        generator: IdGenerator[Any] = redis_sequencer.RedisSnowflake.open(
            self.server.url, "contract", config, clock=self.clock, sleep=self.sleep
        )
        return generator

    def close_subject(self, subject: IdGenerator[Any]) -> None:
        assert isinstance(subject, redis_sequencer.RedisSnowflake) and self.server is not None
        subject.close()
        delete_namespace(self.server.url, self.namespace)


@pytest.fixture(autouse=True)
def _redis_server(redis_server: RedisServer) -> None:
    RedisSnowflakeContract.server = redis_server


def test_redis_snowflake_claims_every_sequencer_property() -> None:
    assert RedisSnowflakeContract.skipped_properties() == ()


TestRedisSnowflakeContract = RedisSnowflakeContract.TestCase
TestRedisSnowflakeContract.settings = settings(
    settings.default, max_examples=30, stateful_step_count=30, deadline=None
)
